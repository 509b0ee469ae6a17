"""Merges of bfloat16 inputs as stored, on memory addresses, by the fused kernels: the methods'
forms for the engine's torch-free lane (:mod:`alloykit.engine.stored`).

Linear, task arithmetic and Model Stock are one fused loop each over bfloat16 values as
stored (:mod:`alloykit.native`): torch adds nothing to them but its import, about 3 s here,
as long as reading and writing a 1.1B model. Each merge below computes what the method's
torch path computes on stored chunks, call for call to the same kernels with the same
arguments (the scalars come from the functions here, which the torch paths call too), so the
two give the same bits; tests compare them.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from alloykit import native


@dataclass(frozen=True)
class StoredChunk:
    """Rows of every input of one tensor, bfloat16 as stored, and where the merge goes.

    Model ``m``'s ``numel`` values start ``m * stride`` elements after ``models``; ``stride``
    is ``numel`` when the models lie side by side (a chunk read from disk), larger when the
    chunk views inputs held whole.
    """

    models: int  # address
    count: int  # number of models
    stride: int
    base: int | None  # address
    numel: int
    out: int  # address of ``numel`` float32 values


StoredObserver = Callable[[StoredChunk], None]


class StoredMerge:
    """One tensor's merge in the lane: statistics passes, then the merge of each chunk (the
    same protocol as :class:`~alloykit.methods.streaming.StreamingMerge`)."""

    def passes(self) -> Iterator[StoredObserver]:
        return iter(())

    def merge(self, chunk: StoredChunk) -> None:
        raise NotImplementedError


def weight_divisor(weights: Sequence[float], normalize: bool) -> float:
    """What a normalized weighted sum divides by: the weights' float32 sum in model order, or
    1 without ``normalize`` or where that sum is ~0 (|sum| <= 1e-8)."""
    total = np.float32(0)
    for weight in np.asarray(weights, dtype=np.float32):
        total = np.float32(total + weight)
    return float(total) if normalize and abs(float(total)) > 1e-8 else 1.0


def stock_ratio(sums: Sequence[float], k: int) -> float:
    """Model Stock's ``t = k·cosθ / (1 + (k − 1)·cosθ)`` from the task vectors' squared norms
    ``sums[:k]`` and pair products ``sums[k:]`` (:func:`itertools.combinations` order), with
    cosθ their mean pairwise cosine; 0 (keep the base) where the denominator is ~0."""
    norms = [math.sqrt(s) for s in sums[:k]]
    cosines = [
        min(1.0, max(-1.0, sums[k + p] / max(norms[i] * norms[j], 1e-6)))
        for p, (i, j) in enumerate(itertools.combinations(range(k), 2))
    ]
    cos = sum(cosines) / len(cosines)
    denominator = 1 + (k - 1) * cos
    return 0.0 if abs(denominator) < 1e-6 else k * cos / denominator


class LinearOfStored(StoredMerge):
    """``linear``: the weighted sum of the models (over the weights' sum with ``normalize``)."""

    def __init__(self, weights: Sequence[float], normalize: bool) -> None:
        self.weights = np.asarray(weights, dtype=np.float32)
        self.divide_by = weight_divisor(self.weights, normalize)

    def merge(self, chunk: StoredChunk) -> None:
        if chunk.stride != chunk.numel:
            raise ValueError("linear reads models side by side")
        native.weighted_sum_at(
            chunk.models, True, chunk.numel, chunk.count, self.weights.ctypes.data,
            self.divide_by, chunk.out,
        )  # fmt: skip


class TaskArithmeticOfStored(StoredMerge):
    """``base + scale · Σ weight_m · (model_m − base)``, over the weights' sum with
    ``normalize``: task arithmetic without sparsification or sign election."""

    def __init__(self, weights: Sequence[float], *, normalize: bool, scale: float) -> None:
        self.weights = [float(w) for w in np.asarray(weights, dtype=np.float32)]
        self.normalize = normalize
        self.scale = scale

    def merge(self, chunk: StoredChunk) -> None:
        assert chunk.base is not None
        keeps = [native.Keep(mode=native.KeepMode.ALL, weight=w) for w in self.weights]
        native.task_vectors_at(
            chunk.models, chunk.base, True, chunk.numel, chunk.stride, keeps,
            sign=native.SignVote.NONE, normalize=self.normalize,
            divide_by=weight_divisor(self.weights, self.normalize), scale=self.scale,
            out=chunk.out,
        )  # fmt: skip


class ModelStockOfStored(StoredMerge):
    """Model Stock with one ratio per tensor: a pass summing the task vectors' norms and pair
    products, then task arithmetic with every weight ``t / k``."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.merging: TaskArithmeticOfStored | None = None

    def passes(self) -> Iterator[StoredObserver]:
        totals = [0.0] * (self.count + self.count * (self.count - 1) // 2)

        def observe(chunk: StoredChunk) -> None:
            assert chunk.base is not None
            sums = native.offset_products_at(
                chunk.models, chunk.base, True, chunk.numel, chunk.stride, chunk.count
            )
            for i, value in enumerate(sums):
                totals[i] += value

        yield observe
        ratio = stock_ratio(totals, self.count)
        weight = float(np.float32(ratio / self.count))
        self.merging = TaskArithmeticOfStored([weight] * self.count, normalize=False, scale=1.0)

    def merge(self, chunk: StoredChunk) -> None:
        assert self.merging is not None, "the statistics pass runs first"
        self.merging.merge(chunk)


Scalars = dict[str, object]


def _linear(per_model: dict[str, Sequence[float]], globals_: Scalars, count: int):
    return LinearOfStored(per_model["weight"], bool(globals_["normalize"]))


def _task_arithmetic(per_model: dict[str, Sequence[float]], globals_: Scalars, count: int):
    scale = float(globals_["lambda"])  # type: ignore[arg-type]
    return TaskArithmeticOfStored(
        per_model["weight"], normalize=bool(globals_["normalize"]), scale=scale
    )


def _model_stock(per_model: dict[str, Sequence[float]], globals_: Scalars, count: int):
    return None if globals_.get("filter_wise") else ModelStockOfStored(count)


STORED_MERGES: dict[str, Callable[..., StoredMerge | None]] = {
    "linear": _linear,
    "task_arithmetic": _task_arithmetic,
    "model_stock": _model_stock,
}
"""The methods the lane runs, each a factory ``(per_model, globals, count)`` of its merge of
one tensor, or ``None`` where the parameters need the torch path."""


def stored_merge(
    method: str, per_model: dict[str, Sequence[float]], globals_: Scalars, count: int
) -> StoredMerge | None:
    """The lane's merge of one tensor by ``method``, or ``None`` where it has none."""
    factory = STORED_MERGES.get(method)
    if factory is None or not 0 < count <= native.MAX_MODELS:
        return None
    return factory(per_model, globals_, count)
