"""Task Singular Vectors merging (TSV-M).

Task Singular Vectors: Reducing Task Interference in Model Merging, Gargiulo et al. 2025,
arXiv:2412.00081. A layer's task vectors are low-rank in practice, and tasks interfere where
their singular directions overlap. TSV-M keeps each of the T tasks' top ``k / T`` singular
directions, concatenates them, replaces the concatenated left and right singular vectors by
their nearest orthonormal matrices (removing the overlap) and reassembles the layer with the
tasks' own singular values.
"""

from __future__ import annotations

import torch

from alloykit.methods.registry import register
from alloykit.methods.subspace import merged_by_matrix, reassemble, top_singular


def tsv_matrix(deltas: torch.Tensor) -> torch.Tensor:
    """The TSV-M merge of one layer's task vectors ``[T, rows, cols]``."""
    count = deltas.shape[0]
    rank = min(deltas.shape[1:]) // count
    if rank == 0:
        return torch.zeros_like(deltas[0])
    parts = [top_singular(delta, rank) for delta in deltas]
    u = torch.cat([p[0] for p in parts], dim=1)
    s = torch.cat([p[1] for p in parts])
    vh = torch.cat([p[2] for p in parts], dim=0)
    return reassemble(u, s, vh)


@register("tsv_merge")
def tsv_merge(
    tensors: torch.Tensor, base: torch.Tensor | None, *, weight: torch.Tensor, alpha: float
) -> torch.Tensor:
    assert base is not None
    return merged_by_matrix(tensors, base, weight, alpha, tsv_matrix)
