"""RegMean: the linear layer whose outputs are closest to every model's on its own inputs.

Dataless Knowledge Fusion by Merging Weights of Language Models, Jin et al. 2023
(arXiv:2212.09849). For a linear layer ``y = x Wᵀ`` (torch stores ``W`` as ``[out, in]``) and
each model's inputs ``X_i``, minimising ``Σ_i ‖X_i Wᵀ − X_i W_iᵀ‖²`` gives
``Wᵀ = (Σ G_i)⁻¹ Σ G_i W_iᵀ`` with the Gram matrices ``G_i = X_iᵀ X_i`` ``[in, in]``. As in the
paper and its reference code, off-diagonal entries are scaled by ``alpha`` first
(``G̃ = α G + (1 − α) diag(G)``), which regularises towards the plain average. Tensors without
a Gram matrix (norms, biases, embeddings) are the plain average, as the reference does.
"""

from __future__ import annotations

import torch

SOLVE_DTYPE = torch.float64
"""Grams of real activations are badly conditioned; the solve runs in float64."""


def scale_off_diagonal(grams: torch.Tensor, alpha: float) -> torch.Tensor:
    """``α G + (1 − α) diag(G)`` for each Gram matrix of a stack ``[n, in, in]``."""
    diagonal = torch.diagonal(grams, dim1=-2, dim2=-1)
    return alpha * grams + (1.0 - alpha) * torch.diag_embed(diagonal)


def regmean_solve(weights: torch.Tensor, grams: torch.Tensor) -> torch.Tensor:
    """``(Σ G_i W_iᵀ)ᵀ (Σ G_i)⁻¹`` for weights ``[n, out, in]`` and Grams ``[n, in, in]``.

    A singular ``Σ G_i`` (an input feature no calibration token ever set) takes the
    pseudo-inverse: the minimum-norm solution.
    """
    grams = grams.to(SOLVE_DTYPE)
    gram_sum = grams.sum(dim=0)
    target = torch.einsum("nij,noj->io", grams, weights.to(SOLVE_DTYPE))
    solution, info = torch.linalg.solve_ex(gram_sum, target)
    if int(info) != 0 or not torch.isfinite(solution).all():
        solution = torch.linalg.pinv(gram_sum, hermitian=True) @ target
    return solution.T.to(weights.dtype).contiguous()


def regmean(
    tensors: torch.Tensor,
    base: torch.Tensor | None,
    *,
    alpha: float,
    gram: torch.Tensor | None,
) -> torch.Tensor:
    """The RegMean merge of one tensor; ``gram`` stacks the models' input Grams
    ``[n, in, in]`` of a linear weight, or is ``None`` (the plain average)."""
    if gram is None:
        return tensors.mean(dim=0)
    return regmean_solve(tensors, scale_off_diagonal(gram, alpha))
