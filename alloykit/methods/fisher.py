"""Fisher merging: a per-entry average weighted by each model's diagonal Fisher information.

Merging Models with Fisher-Weighted Averaging, Matena & Raffel 2022 (arXiv:2111.09832): each
model's posterior is approximated by a Gaussian with precision its diagonal Fisher ``F_i``,
and the merge maximises their joint likelihood, which for diagonal precisions is the entrywise
``θ* = Σ λ_i F_i θ_i / Σ λ_i F_i``. Fisher entries are floored at ``fisher_floor`` (the
reference implementation's 1e-6) so that an entry no model's data touched is the weighted
average instead of 0/0. A tensor without Fisher statistics (none were recorded for it) is the
``λ``-weighted average: the Fisher merge with equal Fishers.
"""

from __future__ import annotations

import torch

from alloykit.methods.linear import linear
from alloykit.methods.registry import register


@register("fisher")
def fisher_merge(
    tensors: torch.Tensor,
    base: torch.Tensor | None,
    *,
    weight: torch.Tensor,
    fisher_floor: float,
    fisher: torch.Tensor | None,
) -> torch.Tensor:
    """``Σ λ_i max(F_i, floor) θ_i / Σ λ_i max(F_i, floor)`` entrywise; ``fisher`` stacks the
    models' Fisher diagonals ``[n, *shape]`` (or is ``None``: the weighted average). Sums run
    model by model, so temporaries stay at three tensors of the output's size."""
    if fisher is None:
        return linear(tensors, base, weight=weight, normalize=True)
    weights = weight.tolist()
    numerator = torch.zeros_like(tensors[0])
    denominator = torch.zeros_like(tensors[0])
    for m in range(tensors.shape[0]):
        precision = fisher[m].clamp_min(fisher_floor).mul_(weights[m])
        denominator.add_(precision)
        numerator.addcmul_(precision, tensors[m])
    return numerator.div_(denominator)
