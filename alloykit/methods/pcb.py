"""Parameter Competition Balancing (PCB-Merging).

Parameter Competition Balancing for Model Merging, Du et al. 2024, arXiv:2410.02396. Each
task-vector entry gets an importance from two kinds of competition: within its task
(intra-balancing: how large it is relative to the task's other entries, amplified
exponentially with the number of tasks) and between tasks (inter-balancing: how well it agrees
with the other tasks' entries, ``tanh(tau_i * sum_j tau_j)``). The least important entries are
dropped, and the rest are averaged with their importances as weights.
"""

from __future__ import annotations

import torch

from alloykit.methods.registry import register
from alloykit.methods.subspace import task_vectors

OUTLIER_FRACTION = 1e-4
"""Fraction of each task vector's smallest and largest magnitudes clipped (the reference's)."""


def kth_smallest(rows: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k``-th smallest value (0-based) of each row of ``rows`` ``[n, d]``, as ``[n, 1]``."""
    return rows.kthvalue(k + 1, dim=1, keepdim=True).values


def clip_outliers(magnitudes: torch.Tensor, fraction: float) -> torch.Tensor:
    """Clamp each row between its ``fraction`` and ``1 - fraction`` quantiles: the
    ``floor(d * fraction)`` smallest and largest values take the next value inwards."""
    d = magnitudes.shape[1]
    skip = int(d * fraction)
    low, high = kth_smallest(magnitudes, skip), kth_smallest(magnitudes, d - 1 - skip)
    return magnitudes.clamp(low, high)


def min_max(rows: torch.Tensor) -> torch.Tensor:
    """Each row mapped linearly onto [0, 1] (a constant row onto zeros)."""
    low = rows.amin(dim=1, keepdim=True)
    spread = rows.amax(dim=1, keepdim=True) - low
    return (rows - low) / torch.where(spread > 0, spread, 1.0)


def balanced_importance(deltas: torch.Tensor, magnitudes: torch.Tensor) -> torch.Tensor:
    """PCB's importance of every entry of flat task vectors ``[n, d]``: intra-balancing
    ``exp(n * minmax(|tau_i|)^2)`` times inter-balancing ``tanh(tau_i * sum_j tau_j)``."""
    intra = torch.exp(deltas.shape[0] * min_max(magnitudes).square())
    inter = torch.tanh(deltas * deltas.sum(0))
    return intra * inter


def keep_scores(importance: torch.Tensor, ratio: float) -> torch.Tensor:
    """Merge weights ``(x - cut) / (max - cut)`` of the entries above each row's cut-off, the
    value at sorted position ``floor(d * (1 - ratio))`` (the reference's), zero elsewhere; where
    the cut-off is the maximum, the entries equal to it weigh 1 (the reference divides 0 by 0).
    """
    d = importance.shape[1]
    if ratio == 0:
        return torch.zeros_like(importance)
    cut = kth_smallest(importance, min(int(d * (1 - ratio)), d - 1))
    spread = importance.amax(dim=1, keepdim=True) - cut
    above = (importance - cut).clamp(min=0) / torch.where(spread > 0, spread, 1.0)
    return torch.where(spread > 0, above, (importance >= cut).to(importance.dtype))


@register("pcb")
def pcb(
    tensors: torch.Tensor,
    base: torch.Tensor | None,
    *,
    weight: torch.Tensor,
    pcb_ratio: float,
    **params: float,
) -> torch.Tensor:
    assert base is not None
    deltas = task_vectors(tensors, base, weight).reshape(tensors.shape[0], -1)
    magnitudes = clip_outliers(deltas.abs(), OUTLIER_FRACTION)
    scores = keep_scores(balanced_importance(deltas, magnitudes), pcb_ratio)
    clipped = deltas.sign() * magnitudes
    merged = (clipped * scores).sum(0) / scores.sum(0).clamp(min=1e-12)
    return base + params["lambda"] * merged.reshape(base.shape)
