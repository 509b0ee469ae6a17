"""Model Stock: move from the base towards the average of the fine-tuned models by an amount
set by how much their updates agree.

Model Stock: All We Need Is Just a Few Fine-Tuned Models, Jang et al. 2024, arXiv:2403.19522.
With k fine-tuned models whose updates from the base meet at angle θ, the paper's optimal
interpolation ratio is ``t = k·cosθ / (1 + (k − 1)·cosθ)`` and the merged weight is
``t · mean(models) + (1 − t) · base``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import torch

from alloykit import native
from alloykit.methods.coefficients import stock_ratio
from alloykit.methods.registry import register_streaming
from alloykit.methods.streaming import Chunk, Observer
from alloykit.methods.task_vectors import TaskVectorMerge


def pair_sums(offsets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared norms ``[k, ...]`` and pairwise dot products ``[pairs, ...]`` of ``offsets``
    ``[k, ..., d]`` along the last dimension (additive over chunks of that dimension)."""
    pairs = itertools.combinations(range(offsets.shape[0]), 2)
    if offsets.dim() == 2:  # one Gram matrix product reads the offsets once (BLAS)
        gram = offsets @ offsets.T
        return gram.diagonal().clone(), torch.stack([gram[i, j] for i, j in pairs])
    squares = offsets.square().sum(-1)
    products = torch.stack([(offsets[i] * offsets[j]).sum(-1) for i, j in pairs])
    return squares, products


def interpolation_ratio(squares: torch.Tensor, products: torch.Tensor) -> torch.Tensor:
    """The paper's ``t = k·cosθ / (1 + (k − 1)·cosθ)``, with cosθ the mean pairwise cosine.

    Where the denominator is ~0 (|x| < 1e-6) the ratio is 0 (keep the base), as in mergekit.
    """
    k = squares.shape[0]
    norms = squares.sqrt()
    cosines = [
        (products[p] / (norms[i] * norms[j]).clamp(min=1e-6)).clamp(-1, 1)
        for p, (i, j) in enumerate(itertools.combinations(range(k), 2))
    ]
    cos = torch.stack(cosines).mean(0)
    denominator = 1 + (k - 1) * cos
    singular = denominator.abs() < 1e-6
    return torch.where(singular, 0.0, k * cos / torch.where(singular, 1.0, denominator))


class ModelStockMerge(TaskVectorMerge):
    """``t · mean(models) + (1 − t) · base``; ``t`` from the whole task vectors (a pass over
    the chunks) or, ``filter_wise``, from each row (vector along the last dimension).

    With one ``t`` per tensor this is task arithmetic with every weight ``t / k``
    (``base + Σ (t / k)·(model − base)``), so the merge pass is :class:`TaskVectorMerge`'s,
    fused kernels and bfloat16 inputs read as stored included; the statistics pass has its own
    kernel (``ak_offset_products``).
    """

    def __init__(self, shape: tuple[int, ...], dtype: torch.dtype, *, filter_wise: bool) -> None:
        super().__init__(shape, dtype, weight=torch.empty(0))  # the weights follow from t
        self.filter_wise = filter_wise and len(shape) >= 2

    def passes(self) -> Iterator[Observer]:
        if self.filter_wise:
            return
        totals: list[torch.Tensor] = []  # squared norms, then pair products, in float64
        models = 0

        def observe(chunk: Chunk) -> None:
            nonlocal models
            models = chunk.tensors.shape[0]
            sums = self._offset_products(chunk)
            if totals:
                totals[0] += sums.to(totals[0].device)
            else:
                totals.append(sums)

        yield observe
        k, sums = models, totals[0]
        ratio = stock_ratio(sums.tolist(), k)
        self.weight = torch.full((k,), ratio / k, dtype=torch.float32, device=sums.device)

    def _offset_products(self, chunk: Chunk) -> torch.Tensor:
        assert chunk.base is not None
        if self._fused(chunk):
            sums = native.offset_products(chunk.tensors, chunk.base)
            return torch.tensor(sums, dtype=torch.float64)
        chunk = chunk.widened(self.dtype)
        assert chunk.base is not None
        offsets = chunk.tensors.sub_(chunk.base).reshape(chunk.tensors.shape[0], -1)
        return torch.cat(pair_sums(offsets)).double()

    def merge(self, chunk: Chunk) -> torch.Tensor:
        if not self.filter_wise:
            return super().merge(chunk)
        chunk = chunk.widened(self.dtype)
        assert chunk.base is not None
        ratio = interpolation_ratio(*pair_sums(chunk.tensors - chunk.base))[..., None]
        return ratio * chunk.tensors.mean(0) + (1 - ratio) * chunk.base


register_streaming("model_stock", ModelStockMerge)
