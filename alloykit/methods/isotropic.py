"""Isotropic merging in the common subspace (Iso-C) and with task-specific subspaces (Iso-CTS).

No Task Left Behind: Isotropic Model Merging with Common and Task-Specific Subspaces, Marczak
et al. 2025, arXiv:2502.04959. The summed task vector's spectrum is dominated by a few
directions, so tasks whose directions carry small singular values are drowned out; setting
every singular value to their mean (an isotropic spectrum) gives each direction an equal say.
Iso-CTS also reserves part of the spectrum for each task's own directions orthogonal to the
common subspace, so tasks the common subspace misses keep theirs.
"""

from __future__ import annotations

import torch

from alloykit.methods.registry import register
from alloykit.methods.subspace import (
    merged_by_matrix,
    polar_factor,
    reassemble,
    svd,
    top_singular,
    widened,
)


def isotropic_sum(deltas: torch.Tensor) -> torch.Tensor:
    """Iso-C of one layer: ``U diag(mean(s)) Vh`` of the summed task vectors ``[T, rows, cols]``."""
    u, s, vh = svd(deltas.sum(0))
    return (u * s.mean()) @ vh


def subspace_split(k: int, count: int, fraction: float) -> tuple[int, int]:
    """``(common, per_task)`` directions of a layer with ``k`` singular values shared by
    ``count`` tasks: the task-specific rest divides evenly (the reference's rounding)."""
    per_task = round((k - int(k * fraction)) / count)
    if per_task * count > k:
        per_task = k // count
    return k - per_task * count, per_task


def task_specific(
    delta: torch.Tensor, u_common: torch.Tensor, u_rest: torch.Tensor | None, rank: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``rank`` leading singular triplets of ``delta``'s part outside the common subspace
    ``(I - U_c U_c^T) delta``. Where the summed task vector's singular vectors span the whole
    column space (``rows <= cols``), ``u_rest`` holds the ones outside ``U_c``, so
    ``I - U_c U_c^T = U_rest U_rest^T`` and the SVD is taken of the small ``U_rest^T delta``
    (``rows - common`` rows) instead of the whole projected matrix: the same triplets, and
    left singular vectors orthogonal to ``U_c`` by construction."""
    if u_rest is not None:
        u, s, vh = top_singular(u_rest.T @ delta, rank)
        return u_rest @ u, s, vh
    return top_singular(delta - u_common @ (u_common.T @ delta), rank)


def isotropic_common_and_specific(deltas: torch.Tensor, fraction: float) -> torch.Tensor:
    """Iso-CTS of one layer's task vectors ``[T, rows, cols]``: the task-specific directions
    beside the common ones, orthogonalized (the polar factors of the concatenated left and right
    singular vectors), every singular value set to their mean."""
    deltas = widened(deltas)
    rows, cols = deltas.shape[1:]
    count = deltas.shape[0]
    common, per_task = subspace_split(min(rows, cols), count, fraction)
    u_sum, s_sum, vh_sum = svd(deltas.sum(0))
    u_common = u_sum[:, :common]
    u_rest = u_sum[:, common:] if rows <= cols else None
    us, ss, vhs = [], [], []
    for delta in deltas:
        u, s, vh = task_specific(delta, u_common, u_rest, per_task)
        us.append(u)
        ss.append(s)
        vhs.append(vh)
    s = torch.cat([*ss, s_sum[:common]])
    vh = torch.cat([*vhs, vh_sum[:common]], dim=0)
    if u_rest is None:
        return reassemble(torch.cat([*us, u_common], dim=1), s.mean().expand_as(s), vh)
    # [U_specific, U_c] with U_specific orthogonal to U_c: its polar factor is
    # [polar(U_specific), U_c], an SVD of rows x (count * per_task) instead of rows x k.
    u_orth = torch.cat([polar_factor(torch.cat(us, dim=1)), u_common], dim=1)
    return (u_orth * s.mean()) @ polar_factor(vh.T).T


@register("iso_c")
def iso_c(
    tensors: torch.Tensor, base: torch.Tensor | None, *, weight: torch.Tensor, alpha: float
) -> torch.Tensor:
    assert base is not None
    return merged_by_matrix(tensors, base, weight, alpha, isotropic_sum)


@register("iso_cts")
def iso_cts(
    tensors: torch.Tensor,
    base: torch.Tensor | None,
    *,
    weight: torch.Tensor,
    common_space_fraction: float,
    alpha: float,
) -> torch.Tensor:
    assert base is not None

    def combine(deltas: torch.Tensor) -> torch.Tensor:
        return isotropic_common_and_specific(deltas, common_space_fraction)

    return merged_by_matrix(tensors, base, weight, alpha, combine)
