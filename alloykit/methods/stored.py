"""Merges of bfloat16 inputs as stored, on memory addresses, by the fused kernels: the methods'
forms for the engine's torch-free raw path (:mod:`alloykit.engine.raw`).

Linear, task arithmetic, DARE and Model Stock are fused loops over bfloat16 values as stored
(:mod:`alloykit.native`): torch adds nothing to them but its import, about 3 s here, as long
as reading and writing a 1.1B model. Each merge below computes what the method's
torch path computes on stored chunks, call for call to the same kernels with the same
arguments (the scalars come from the functions here, which the torch paths call too), so the
two give the same bits; tests compare them.
"""

from __future__ import annotations

import functools
import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from alloykit import native
from alloykit.methods import thinning
from alloykit.methods.coefficients import sign_vote, stock_ratio, weight_divisor
from alloykit.methods.registry import get_method
from alloykit.methods.step_choices import Sparsification
from alloykit.methods.task_vector_settings import METHODS, TaskVectorOptions
from alloykit.methods.thinning import Thinning, as_decimal, model_seed, survivor_bytes

BY_NAME = {settings.name: settings for settings in METHODS}


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
    offset: int = 0  # flat index of the chunk's first value in the whole tensor


StoredObserver = Callable[[StoredChunk], None]


class StoredMerge(ABC):
    """One tensor's merge on the raw path: statistics passes, then the merge of each chunk (the
    same protocol as :class:`~alloykit.methods.streaming.StreamingMerge`)."""

    def passes(self) -> Iterator[StoredObserver]:
        return iter(())

    @abstractmethod
    def merge(self, chunk: StoredChunk) -> None:
        """Write the merged rows of ``chunk`` (float32) at ``chunk.out``."""


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


class TaskVectorsOfStored(StoredMerge):
    """``base + scale · combine(weight_m · thin_m(model_m − base))``: the task-vector methods
    whose thinning is random or none (task arithmetic, DARE with or without sign election),
    as :class:`~alloykit.methods.task_vectors.TaskVectorMerge` computes them with the fused
    kernels. Magnitude cut-offs (TIES, Breadcrumbs) and DELLA's ranks take the torch path."""

    def __init__(
        self,
        weights: Sequence[float],
        options: TaskVectorOptions,
        *,
        densities: Sequence[float] = (),
        numel: int = 0,
    ) -> None:
        self.weights = [float(w) for w in np.asarray(weights, dtype=np.float32)]
        self.options = options
        self.thinnings: list[Thinning] = []
        if options.sparsification is not None:
            if options.sparsification is not Sparsification.RANDOM:
                raise ValueError(f"{options.sparsification} thinning takes the torch path")
            n = len(self.weights)
            bits = n * survivor_bytes(numel) <= thinning.KEPT_BITS_BYTES  # all models, or none
            self.thinnings = [
                Thinning(
                    options.sparsification, numel, density=densities[m],
                    rescale_mode=options.rescale_mode, seed=model_seed(options.seed, m),
                    record_survivors=bits,
                )
                for m in range(n)
            ]  # fmt: skip
        self.sign = sign_vote(options.sign_rule)
        self.divide_by = 1.0
        if options.sign_rule is None:
            self.divide_by = weight_divisor(self.weights, options.normalize)

    def passes(self) -> Iterator[StoredObserver]:
        measured = [(m, t) for m, t in enumerate(self.thinnings) if t.needs_l1]
        if measured:
            self._start_scan()

            def measure(chunk: StoredChunk) -> None:
                assert chunk.base is not None
                keeps = [t.record(t.keep(1.0), chunk.offset, chunk.numel) for _, t in measured]
                models = [chunk.models + 2 * m * chunk.stride for m, _ in measured]
                norms = native.l1_norms_at(models, chunk.base, True, chunk.numel, keeps)
                for (_, t), (before, after) in zip(measured, norms, strict=True):
                    t.add_l1(before, after)

            yield measure
            for _, t in measured:
                t.settle_l1()
        self._start_scan()

    def _start_scan(self) -> None:
        for t in self.thinnings:
            t.start_scan()

    def merge(self, chunk: StoredChunk) -> None:
        assert chunk.base is not None
        if self.thinnings:
            keeps = [
                t.keep(w, offset=chunk.offset)
                for t, w in zip(self.thinnings, self.weights, strict=True)
            ]
        else:
            keeps = native.keep_every(self.weights)
        native.task_vectors_at(
            chunk.models, chunk.base, True, chunk.numel, chunk.stride, keeps, sign=self.sign,
            normalize=self.options.normalize, divide_by=self.divide_by,
            scale=self.options.scale, out=chunk.out,
        )  # fmt: skip


class ModelStockOfStored(StoredMerge):
    """Model Stock with one ratio per tensor: a pass summing the task vectors' norms and pair
    products, then task arithmetic with every weight ``t / k``."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.merging: TaskVectorsOfStored | None = None

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
        plain = TaskVectorOptions(None, None, None, normalize=False, scale=1.0, seed=0)
        self.merging = TaskVectorsOfStored([weight] * self.count, plain)

    def merge(self, chunk: StoredChunk) -> None:
        assert self.merging is not None, "the statistics pass runs first"
        self.merging.merge(chunk)


Scalars = dict[str, object]


def linear_of_stored(
    method: str, per_model: dict[str, list[float]], globals_: Scalars, count: int, numel: int,
    seed: int,
) -> StoredMerge:  # fmt: skip
    """``linear``'s raw form (:attr:`~alloykit.methods.contract.Method.raw_merge`)."""
    return LinearOfStored(per_model["weight"], bool(globals_["normalize"]))


def model_stock_of_stored(
    method: str, per_model: dict[str, list[float]], globals_: Scalars, count: int, numel: int,
    seed: int,
) -> StoredMerge | None:  # fmt: skip
    """``model_stock``'s raw form, with one ratio per tensor (``filter_wise`` takes the torch
    path)."""
    return None if globals_.get("filter_wise") else ModelStockOfStored(count)


def task_vectors_of_stored(
    method: str, per_model: dict[str, list[float]], globals_: Scalars, count: int, numel: int,
    seed: int,
) -> StoredMerge:  # fmt: skip
    """The raw form of the task-vector methods whose thinning is random or none (those whose
    settings declare it, :data:`~alloykit.methods.task_vector_settings.RAW_THINNING`)."""
    options = BY_NAME[method].options({**globals_, "seed": seed})
    # densities as the torch path sees them: float32, then the decimal the user wrote
    densities = [as_decimal(float(np.float32(d))) for d in per_model.get("density", ())]
    return TaskVectorsOfStored(per_model["weight"], options, densities=densities, numel=numel)


def stored_merge(
    method: str,
    per_model: dict[str, list[float]],
    globals_: Scalars,
    count: int,
    *,
    numel: int = 0,
    seed: int = 0,
) -> StoredMerge | None:
    """The raw path's merge of one tensor by ``method``, or ``None`` where it has none: the
    method declares no raw form (:attr:`~alloykit.methods.contract.Method.raw_merge`), the
    model count is past the kernels', or the form declines these parameters."""
    declared = get_method(method).raw_merge
    if declared is None or not 0 < count <= native.MAX_MODELS:
        return None
    return _factory(declared)(method, per_model, globals_, count, numel, seed)


@functools.cache
def _factory(declared: str) -> Callable[..., StoredMerge | None]:
    """The factory a contract's ``raw_merge`` names (``"module:factory"``), imported once."""
    module, _, name = declared.partition(":")
    return getattr(importlib.import_module(module), name)
