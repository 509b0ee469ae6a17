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


def isotropic_common_and_specific(deltas: torch.Tensor, fraction: float) -> torch.Tensor:
    """Iso-CTS of one layer's task vectors ``[T, rows, cols]``."""
    deltas = widened(deltas)
    count = deltas.shape[0]
    common, per_task = subspace_split(min(deltas.shape[1:]), count, fraction)
    u_common, s_common, vh_common = top_singular(deltas.sum(0), common)
    us, ss, vhs = [], [], []
    for delta in deltas:
        specific = delta - u_common @ (u_common.T @ delta)
        u, s, vh = top_singular(specific, per_task)
        us.append(u)
        ss.append(s)
        vhs.append(vh)
    u = torch.cat([*us, u_common], dim=1)
    s = torch.cat([*ss, s_common])
    vh = torch.cat([*vhs, vh_common], dim=0)
    return reassemble(u, s.mean().expand_as(s), vh)


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
