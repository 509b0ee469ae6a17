"""SCE: select the task-vector entries the models disagree on most, weight each model by the
energy of its task vector, erase minority signs.

FuseChat: Knowledge Fusion of Chat Models, Wan et al. 2024, arXiv:2408.07990, section "SCE":
Select the ``select_topk`` fraction of entries with the highest variance across models,
Calculate each model's weight as the squared magnitude of its selected task vector over the
sum of all, Erase entries whose sign disagrees with the elected (total) sign, then take the
weighted mean of the survivors.
"""

from __future__ import annotations

import torch

from alloykit.methods.linear import broadcast_weights
from alloykit.methods.registry import BasePolicy, Param, Scope, register
from alloykit.methods.selection import top_k_mask
from alloykit.methods.steps import SignRule, disjoint_sum, sign_consensus


def variance_mask(deltas: torch.Tensor, fraction: float) -> torch.Tensor:
    """Mask of the ``fraction`` of entries with the largest variance across models.

    The count is a fraction of the entries whose variance is non-zero, as in mergekit.
    """
    variance = deltas.var(dim=0, unbiased=False).reshape(-1)
    k = int(int(torch.count_nonzero(variance)) * fraction)
    return top_k_mask(variance, k).reshape(deltas.shape[1:])


def energy_weights(deltas: torch.Tensor) -> torch.Tensor:
    """Each model's share of the total squared magnitude; uniform if every delta is zero."""
    energy = deltas.square().reshape(deltas.shape[0], -1).sum(-1)
    total = energy.sum()
    if total == 0:
        return torch.full_like(energy, 1.0 / energy.numel())
    return energy / total


@register(
    "sce",
    summary="Keep high-variance entries, weight models by task-vector energy, erase minority "
    "signs.",
    reference="FuseChat: Knowledge Fusion of Chat Models, Wan et al. 2024, arXiv:2408.07990",
    params=(
        Param(
            "select_topk",
            float,
            Scope.GLOBAL,
            1.0,
            minimum=0.0,
            maximum=1.0,
            doc="fraction of entries (with non-zero variance across models) kept",
        ),
        Param("int8_mask", bool, Scope.GLOBAL, False, doc="accepted for mergekit; no effect"),
    ),
    base=BasePolicy.REQUIRED,
    notes="Weights fall back to uniform only when every task vector is zero (mergekit: when "
    "the sum of mean squares is below 1e-6, which typical small fine-tuning deltas hit, "
    "silently making the weights uniform). The agreeing entries are divided by the exact sum "
    "of their weights (mergekit: by max(sum, 1e-6), which also shrinks entries whose agreeing "
    "weights sum below 1e-6).",
)
def sce(
    tensors: torch.Tensor, base: torch.Tensor, *, select_topk: float, int8_mask: bool
) -> torch.Tensor:
    deltas = tensors - base
    if select_topk < 1:
        deltas = deltas * variance_mask(deltas, select_topk)
    agree = sign_consensus(deltas, SignRule.TOTAL)
    weights = energy_weights(deltas)
    weighted = deltas * broadcast_weights(weights, deltas)
    return base + disjoint_sum(weighted, weights, agree, normalize=True)
