"""Arcee Fusion: keep the other model's change only where it matters most.

Arcee Fusion, Arcee AI 2025, as defined in mergekit (``merge_methods/arcee_fusion.py``; no
paper). Each entry's importance is the size of its change times the KL divergence between the
softmax of its row in the other model and in the base (rows along the last dimension), so a
change counts for more in a row whose output distribution it moves. Entries whose importance is
an outlier, at least ``median + 1.5·IQR`` of the tensor's importances (Tukey's fence), take the
other model's value; the rest keep the base's.
"""

from __future__ import annotations

import torch

from alloykit.methods.registry import register

KL_EPSILON = 1e-8
FENCE = 1.5


def importance(other: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """``|other − base| · KL(softmax(other) || softmax(base))`` per row (last dimension)."""
    p = torch.softmax(other, dim=-1) + KL_EPSILON
    q = torch.softmax(base, dim=-1) + KL_EPSILON
    divergence = torch.sum(p * torch.log(p / q), dim=-1)
    return (other - base).abs() * divergence.unsqueeze(-1)


def lower_quantile(values: torch.Tensor, q: float) -> torch.Tensor:
    """The sorted values' entry at ``floor(q·(n − 1))``: no interpolation, as mergekit takes."""
    flat = values.reshape(-1)
    index = int(q * (flat.numel() - 1))
    return torch.kthvalue(flat.cpu(), index + 1).values.to(values.device)


def fusion_mask(scores: torch.Tensor) -> torch.Tensor:
    """1.0 where ``scores`` reach Tukey's upper fence ``median + 1.5·IQR``, else 0.0."""
    median = lower_quantile(scores, 0.5)
    spread = lower_quantile(scores, 0.75) - lower_quantile(scores, 0.25)
    return (scores >= median + FENCE * spread).to(scores.dtype)


@register("arcee_fusion")
def arcee_fusion(tensors: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    other, origin = tensors[0], base
    if other.dim() == 0:  # a scalar is a row of one
        return arcee_fusion(other.reshape(1, 1), origin.reshape(1))[0].reshape(())
    delta = other - origin
    return origin + delta * fusion_mask(importance(other, origin))
