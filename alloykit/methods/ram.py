"""RAM and RAM+ (tensor-local): merge sparse task vectors without diluting unique updates.

Behavior Knowledge Merge in Reinforced Agentic Models, Yuan et al. 2026, arXiv:2601.13572.
RL fine-tuning changes few parameters, and different ones per task: averaging every entry over
all models shrinks an update only one model made. RAM averages an entry only over the models
that changed it (``|delta| > epsilon``), so a unique update is kept whole. RAM+ also scales each
model's unique updates by ``1 + r·min(shared/unique, alpha)``, where shared and unique count
that model's changed entries that other models changed too / that only it changed; as in
mergekit's ``ramplus_tl``, they are counted in the tensor being merged (a pass over its rows).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from alloykit.methods.registry import register, register_streaming
from alloykit.methods.steps import changed_entries, shared_mean_unique_kept
from alloykit.methods.streaming import Chunk, Observer, StreamingMerge


@register("ram")
def ram(tensors: torch.Tensor, base: torch.Tensor, *, epsilon: float) -> torch.Tensor:
    deltas = tensors - base
    changed, counts = changed_entries(deltas, epsilon)
    return base + shared_mean_unique_kept(deltas, changed, counts)


class RamPlusMerge(StreamingMerge):
    """RAM+ on one tensor: a pass counts each model's shared and unique entries, then each
    chunk is merged with the resulting unique-update scales."""

    def __init__(
        self, shape: tuple[int, ...], dtype: torch.dtype, *, r: float, alpha: float, epsilon: float
    ) -> None:
        self.r, self.alpha, self.epsilon = r, alpha, epsilon
        self.shared: torch.Tensor | None = None  # [n] changed entries others changed too
        self.unique: torch.Tensor | None = None  # [n] changed entries no other model changed
        self.scale: torch.Tensor | None = None

    def passes(self) -> Iterator[Observer]:
        yield self._count
        assert self.shared is not None and self.unique is not None
        ratio = self.shared.to(torch.float32) / self.unique.to(torch.float32).clamp(
            min=self.epsilon
        )
        self.scale = 1 + self.r * ratio.clamp(min=0, max=self.alpha)

    def _count(self, chunk: Chunk) -> None:
        assert chunk.base is not None
        changed, counts = changed_entries(chunk.tensors - chunk.base, self.epsilon)
        flat = changed.reshape(changed.shape[0], -1)
        counts = counts.reshape(1, -1)
        shared = (flat & (counts > 1)).sum(dim=1)
        unique = (flat & (counts == 1)).sum(dim=1)
        self.shared = shared if self.shared is None else self.shared + shared
        self.unique = unique if self.unique is None else self.unique + unique

    def merge(self, chunk: Chunk) -> torch.Tensor:
        assert chunk.base is not None and self.scale is not None
        deltas = chunk.tensors - chunk.base
        changed, counts = changed_entries(deltas, self.epsilon)
        scale = self.scale.to(deltas.device)
        return chunk.base + shared_mean_unique_kept(deltas, changed, counts, scale)


register_streaming("ramplus_tl", RamPlusMerge)
