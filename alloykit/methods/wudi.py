"""WUDI merging: the merged task vector that least disturbs each task's own inputs.

Whoever Started the Interference Should End It: Guiding Data-Free Model Merging via Task
Vectors, Cheng et al. 2025, arXiv:2503.08099. A layer's task vector ``tau_i`` spans (roughly)
the inputs its task feeds that layer, so the interference a merged vector ``X`` causes on task
``i`` is measured without data as ``||(X - tau_i) tau_i^T||_F^2``, weighted by
``1 / ||tau_i||_F^2``. ``X`` starts at the sum of the task vectors and takes a fixed number of
Adam steps on that loss.
"""

from __future__ import annotations

import torch

from alloykit.methods.registry import register
from alloykit.methods.subspace import is_matrix, task_vectors

BETAS = (0.9, 0.999)
EPS = 1e-8
"""Adam's defaults (Kingma & Ba, arXiv:1412.6980), as the reference uses them."""


def interference_gradient_terms(deltas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(S, B)`` with the loss's gradient ``2 (X S - B)``: ``S = sum_i tau_i^T tau_i / n_i``,
    ``B = sum_i tau_i tau_i^T tau_i / n_i``, ``n_i = ||tau_i||_F^2`` (zero vectors left out)."""
    cols = deltas.shape[-1]
    s = deltas.new_zeros(cols, cols)
    b = torch.zeros_like(deltas[0])
    for delta in deltas:
        norm = delta.square().sum()
        if norm == 0:
            continue
        gram = delta.T @ delta / norm
        s += gram
        b += delta @ gram
    return s, b


def wudi_matrix(deltas: torch.Tensor, iterations: int, learning_rate: float) -> torch.Tensor:
    """Adam on ``sum_i ||(X - tau_i) tau_i^T||^2 / ||tau_i||^2`` from ``X = sum_i tau_i``."""
    merged = deltas.sum(0)
    s, b = interference_gradient_terms(deltas)
    first = torch.zeros_like(merged)
    second = torch.zeros_like(merged)
    beta1, beta2 = BETAS
    for step in range(1, iterations + 1):
        gradient = (merged @ s - b).mul_(2)
        first.mul_(beta1).add_(gradient, alpha=1 - beta1)
        second.mul_(beta2).addcmul_(gradient, gradient, value=1 - beta2)
        denominator = (second.sqrt() / (1 - beta2**step) ** 0.5).add_(EPS)
        merged.addcdiv_(first, denominator, value=-learning_rate / (1 - beta1**step))
    return merged


@register("wudi")
def wudi(
    tensors: torch.Tensor,
    base: torch.Tensor | None,
    *,
    weight: torch.Tensor,
    iterations: int,
    learning_rate: float,
) -> torch.Tensor:
    assert base is not None
    deltas = task_vectors(tensors, base, weight)
    if not is_matrix(base):
        return base + deltas.mean(0)
    return base + wudi_matrix(deltas, iterations, learning_rate)
