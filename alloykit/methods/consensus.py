"""Consensus merging with TALL masks.

Localizing Task Information for Improved Model Merging and Compression, Wang et al. 2024,
arXiv:2405.07813. Task t's TALL mask marks the entries where its own task vector outweighs
what the other tasks add there (``|tau_t| > lambda * |sum(tau) - tau_t|``). Entries held by
fewer than ``k`` masks are selfish (one task's) or catastrophic (no task's) and only add
interference, so the consensus merge zeroes them in the task-arithmetic or TIES merge.
"""

from __future__ import annotations

import torch

from alloykit.methods.registry import register
from alloykit.methods.step_choices import SignRule, Sparsification
from alloykit.methods.steps import disjoint_sum, per_model, sign_consensus, sparsify
from alloykit.methods.subspace import task_vectors


def tall_masks(deltas: torch.Tensor, mask_lambda: float) -> torch.Tensor:
    """Each task's TALL mask ``[n, ...]`` (1.0 or 0.0) against the summed task vector."""
    others = deltas.sum(0) - deltas
    return (deltas.abs() > mask_lambda * others.abs()).to(deltas.dtype)


def ties_merge(deltas: torch.Tensor, weight: torch.Tensor, density: torch.Tensor) -> torch.Tensor:
    """TIES-Merging (arXiv:2306.01708) of weighted task vectors: trim each to its ``density``
    by magnitude, elect signs by total mass, sum the agreeing entries (the consensus
    reference's disjoint sum, not TIES's disjoint mean)."""
    kept = torch.stack(
        [
            sparsify(d, Sparsification.MAGNITUDE, density=keep)
            for d, keep in zip(deltas, per_model(density), strict=True)
        ]
    )
    agree = sign_consensus(kept, SignRule.TOTAL)
    return disjoint_sum(kept, weight.to(kept.dtype), agree, normalize=False)


@register("consensus")
def consensus(
    tensors: torch.Tensor,
    base: torch.Tensor | None,
    *,
    weight: torch.Tensor,
    base_method: str,
    density: torch.Tensor,
    mask_lambda: float,
    consensus_k: int,
    **params: float,
) -> torch.Tensor:
    assert base is not None
    deltas = task_vectors(tensors, base, weight)
    held = tall_masks(deltas, mask_lambda).sum(0) >= consensus_k
    merged = ties_merge(deltas, weight, density) if base_method == "ties" else deltas.sum(0)
    return base + params["lambda"] * merged * held
