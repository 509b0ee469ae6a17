"""RegMean: the linear layer whose outputs are closest to every model's on its own inputs.

Dataless Knowledge Fusion by Merging Weights of Language Models, Jin et al. 2023
(arXiv:2212.09849). For a linear layer ``y = x Wᵀ`` (torch stores ``W`` as ``[out, in]``) and
each model's inputs ``X_i``, minimising ``Σ_i ‖X_i Wᵀ − X_i W_iᵀ‖²`` gives
``Wᵀ = (Σ G_i)⁻¹ Σ G_i W_iᵀ`` with the Gram matrices ``G_i = X_iᵀ X_i`` ``[in, in]``. As in the
paper and its reference code, off-diagonal entries are scaled by ``alpha`` first
(``G̃ = α G + (1 − α) diag(G)``), which regularises towards the plain average. Tensors without
a Gram matrix (norms, biases, embeddings) are the plain average, as the reference does.

Row ``r`` of the merged ``W`` depends only on rows ``r`` of the ``W_i`` once ``Σ G̃_i`` is
factorised, so the merge streams: the factorisation is made once per tensor from the Grams,
then each chunk of rows is solved with it. A whole ``[out, in]`` weight (a 32000-row head) is
never widened or solved at once, and the float64 temporaries are one ``[in, in]`` factor plus
a chunk's rows.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from alloykit.methods.registry import register_streaming
from alloykit.methods.streaming import Chunk, StreamingMerge, whole_tensor_kernel

SOLVE_DTYPE = torch.float64
"""Grams of real activations are badly conditioned; the solve runs in float64."""
BLOCK_BYTES = 32 * 1024**2
"""Rows of a Gram widened to float64 at a time: a bounded temporary, and blocks large enough
for an efficient product with a chunk (2 MB blocks made a ``down_proj`` merge 25% slower)."""


def scaled_rows(rows: torch.Tensor, first: int, alpha: float) -> torch.Tensor:
    """Rows ``[first, first + len(rows))`` of ``G̃ = α G + (1 − α) diag(G)`` in float64, given
    those rows of ``G``: one float64 copy, scaled in place."""
    scaled = rows.to(SOLVE_DTYPE, copy=True)
    diagonal = torch.diagonal(scaled, offset=first, dim1=-2, dim2=-1)
    kept = diagonal * (1.0 - alpha)
    scaled.mul_(alpha)
    diagonal.add_(kept)
    return scaled


class RegMeanMerge(StreamingMerge):
    """RegMean of one linear weight, a chunk of rows at a time, with the models' Grams
    ``[n, in, in]`` (float32, as the engine reads them).

    ``Σ G̃_i`` is LU-factorised once, in place in a column-major float64 buffer (LAPACK's
    layout, so no copy is made). Each chunk's target ``Σ G̃_i W_i[rows]ᵀ`` is summed model by
    model, ``G̃_i`` widened a block of rows at a time, and solved with the factor. A singular
    sum (an input feature no calibration token ever set) takes the pseudo-inverse: the
    minimum-norm solution. A chunk whose solution overflows also switches to the
    pseudo-inverse, for it and the chunks after it.
    """

    def __init__(self, grams: torch.Tensor, alpha: float) -> None:
        self.grams = grams
        self.alpha = alpha
        self.pivots: torch.Tensor | None = None
        self.pseudo_inverse: torch.Tensor | None = None
        self.factor: torch.Tensor | None = self._gram_sum()
        pivots = torch.empty(self.factor.shape[0], dtype=torch.int32, device=grams.device)
        info = torch.empty((), dtype=torch.int32, device=grams.device)
        torch.linalg.lu_factor_ex(self.factor, out=(self.factor, pivots, info))
        if int(info) != 0:
            self._use_pseudo_inverse()
        else:
            self.pivots = pivots

    def _gram_sum(self) -> torch.Tensor:
        """``Σ G̃_i`` in float64, laid out column-major."""
        size = self.grams.shape[-1]
        total = torch.zeros((size, size), dtype=SOLVE_DTYPE, device=self.grams.device).mT
        for gram in self.grams:
            for first, rows in self._blocks(gram):
                total[first : first + rows.shape[0]].add_(scaled_rows(rows, first, self.alpha))
        return total

    def _blocks(self, gram: torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
        """Blocks of rows of ``gram`` of about :data:`BLOCK_BYTES` in float64, with the index
        of their first row."""
        step = max(1, BLOCK_BYTES // (gram.shape[-1] * SOLVE_DTYPE.itemsize))
        for first in range(0, gram.shape[0], step):
            yield first, gram[first : first + step]

    def _use_pseudo_inverse(self) -> None:
        self.factor = None
        self.pivots = None
        self.pseudo_inverse = torch.linalg.pinv(self._gram_sum(), hermitian=True)

    def merge(self, chunk: Chunk) -> torch.Tensor:
        weights = chunk.tensors  # [n, rows, in]
        target = torch.zeros(
            (weights.shape[2], weights.shape[1]), dtype=SOLVE_DTYPE, device=weights.device
        )
        for gram, weight in zip(self.grams, weights, strict=True):
            wide = weight.T.to(SOLVE_DTYPE)
            for first, rows in self._blocks(gram):
                target[first : first + rows.shape[0]].addmm_(
                    scaled_rows(rows, first, self.alpha), wide
                )
        solution = self._solve(target)
        return solution.T.to(weights.dtype, memory_format=torch.contiguous_format)

    def _solve(self, target: torch.Tensor) -> torch.Tensor:
        if self.pivots is not None:
            solution = torch.linalg.lu_solve(self.factor, self.pivots, target)
            if bool(torch.isfinite(solution).all()):
                return solution
            self._use_pseudo_inverse()
        return self.pseudo_inverse @ target


class MeanMerge(StreamingMerge):
    """The plain average of each chunk: RegMean's fallback for tensors without Grams."""

    def merge(self, chunk: Chunk) -> torch.Tensor:
        return chunk.tensors.mean(dim=0)


def regmean_streaming(
    shape: tuple[int, ...], dtype: torch.dtype, *, alpha: float, gram: torch.Tensor | None
) -> StreamingMerge:
    """The RegMean merge of one tensor of ``shape``; ``gram`` stacks the models' input Grams
    ``[n, in, in]`` of a linear weight, or is ``None`` (the plain average)."""
    if gram is None:
        return MeanMerge()
    return RegMeanMerge(gram, alpha)


register_streaming("regmean", regmean_streaming)
regmean = whole_tensor_kernel(regmean_streaming)
"""``regmean(tensors, base, *, alpha, gram)``: the RegMean merge of whole tensors."""
