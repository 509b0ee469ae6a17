"""Centred task arithmetic with low-rank task vectors (CART).

Revisiting Weight Averaging for Model Merging, Choi et al. 2024, arXiv:2412.12153. Averaging
the models is task arithmetic on *centred* task vectors (each model minus the mean), and those
keep their task-specific knowledge in a few top singular directions while the rest is noise
that interferes. CART adds back, to the average, each centred task vector's best low-rank
approximation.
"""

from __future__ import annotations

import torch

from alloykit.methods.registry import register
from alloykit.methods.subspace import is_matrix, low_rank


@register("cart")
def cart(
    tensors: torch.Tensor, base: torch.Tensor | None, *, rank_ratio: float, **params: float
) -> torch.Tensor:
    mean = tensors.mean(0)
    if not is_matrix(mean):
        return mean
    rank = int(rank_ratio * min(mean.shape))
    offsets = sum(low_rank(model - mean, rank) for model in tensors)
    return mean + params["lambda"] * offsets
