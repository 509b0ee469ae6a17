"""MagMax: the largest-magnitude task-vector entry of each parameter.

MagMax: Leveraging Model Merging for Seamless Continual Learning, Marczak et al. 2024,
arXiv:2407.06322. The entries that changed most during fine-tuning carry most of a task's
knowledge, so for each parameter the merge keeps the one task vector entry of largest
magnitude (with its sign) instead of averaging it away. Elementwise, so it streams.
"""

from __future__ import annotations

import torch

from alloykit.methods.registry import register
from alloykit.methods.subspace import task_vectors


def max_magnitude(deltas: torch.Tensor) -> torch.Tensor:
    """The entry of largest magnitude across ``deltas`` ``[n, ...]`` (the first on ties)."""
    chosen = deltas.abs().argmax(dim=0, keepdim=True)
    return deltas.gather(0, chosen)[0]


@register("magmax")
def magmax(
    tensors: torch.Tensor, base: torch.Tensor | None, *, weight: torch.Tensor, **params: float
) -> torch.Tensor:
    assert base is not None
    return base + params["lambda"] * max_magnitude(task_vectors(tensors, base, weight))
