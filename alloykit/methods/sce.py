"""SCE: select the task-vector entries the models disagree on most, weight each model by the
energy of its task vector, erase minority signs.

FuseChat: Knowledge Fusion of Chat Models, Wan et al. 2024, arXiv:2408.07990, section "SCE":
Select the ``select_topk`` fraction of entries with the highest variance across models,
Calculate each model's weight as the squared magnitude of its selected task vector over the
sum of all, Erase entries whose sign disagrees with the elected (total) sign, then take the
weighted mean of the survivors.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from alloykit.methods.linear import broadcast_weights
from alloykit.methods.registry import register_streaming
from alloykit.methods.selection import TopK
from alloykit.methods.step_choices import SignRule
from alloykit.methods.steps import disjoint_sum, sign_consensus
from alloykit.methods.streaming import Chunk, Observer, StreamingMerge


def variance(deltas: torch.Tensor) -> torch.Tensor:
    """Each entry's variance across the models' task vectors (population variance)."""
    return deltas.var(dim=0, unbiased=False)


def energy_weights(energy: torch.Tensor) -> torch.Tensor:
    """Each model's share of the total squared magnitude; uniform if every delta is zero."""
    total = energy.sum()
    if total == 0:
        return torch.full_like(energy, 1.0 / energy.numel())
    return energy / total


class SceMerge(StreamingMerge):
    """SCE over row chunks. Passes: the count of entries with non-zero variance, the radix
    passes of the top-``select_topk`` variance cut-off (:mod:`alloykit.methods.selection`),
    then each model's energy over the selected entries; the merge elects signs and takes the
    energy-weighted mean of the agreeing entries."""

    def __init__(
        self, shape: tuple[int, ...], dtype: torch.dtype, *, select_topk: float, int8_mask: bool
    ) -> None:
        self.fraction = select_topk
        self.dtype = dtype
        self.numel = 1
        for d in shape:
            self.numel *= d
        self.selection: TopK | None = None
        self.weights: torch.Tensor | None = None

    def passes(self) -> Iterator[Observer]:
        if self.fraction < 1:
            nonzero = [0]

            def count_nonzero(chunk: Chunk) -> None:
                assert chunk.base is not None
                nonzero[0] += int(torch.count_nonzero(variance(chunk.tensors - chunk.base)))

            yield count_nonzero
            selection = TopK(self.numel, [int(nonzero[0] * self.fraction)], self.dtype)
            self.selection = selection

            def count(chunk: Chunk) -> None:
                assert chunk.base is not None
                selection.count(variance(chunk.tensors.sub_(chunk.base)))

            for _ in range(selection.levels):
                yield count
                selection.settle()
            selection.start_scan()
        energy: list[torch.Tensor] = []  # one running total

        def measure(chunk: Chunk) -> None:
            deltas = self._selected(chunk)
            part = deltas.square().reshape(deltas.shape[0], -1).sum(-1)
            if energy:
                energy[0].add_(part)
            else:
                energy.append(part)

        yield measure
        self.weights = energy_weights(energy[0])
        if self.selection is not None:
            self.selection.start_scan()

    def _selected(self, chunk: Chunk) -> torch.Tensor:
        """The chunk's task vectors (in place), keeping only the selected entries."""
        assert chunk.base is not None
        deltas = chunk.tensors.sub_(chunk.base)
        if self.selection is not None:
            deltas.mul_(self.selection.mask(variance(deltas)))
        return deltas

    def merge(self, chunk: Chunk) -> torch.Tensor:
        assert chunk.base is not None and self.weights is not None
        deltas = self._selected(chunk)
        agree = sign_consensus(deltas, SignRule.TOTAL)
        weighted = deltas.mul_(broadcast_weights(self.weights, deltas))
        return chunk.base + disjoint_sum(weighted, self.weights, agree, normalize=True)


register_streaming("sce", SceMerge)
