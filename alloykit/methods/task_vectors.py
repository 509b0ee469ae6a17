"""Task-vector merging: one generalized merge behind eight registered methods.

A task vector is a fine-tuned model minus its base (Editing Models with Task Arithmetic,
Ilharco et al. 2022, arXiv:2212.04089). Every method here sparsifies each task vector
(or not), weights it, optionally keeps only the entries that agree with an elected sign,
sums, optionally normalizes, scales by ``lambda`` and adds the result back to the base.
Methods differ only in their settings (:mod:`alloykit.methods.task_vector_settings`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from alloykit import native
from alloykit.methods.coefficients import sign_vote, weight_divisor
from alloykit.methods.linear import broadcast_weights
from alloykit.methods.registry import register_streaming
from alloykit.methods.step_choices import RescaleMode, SignRule, Sparsification
from alloykit.methods.steps import (
    KEPT_BITS_BYTES,
    Sparsifier,
    disjoint_sum,
    measure_deltas,
    model_seed,
    per_model,
    sign_consensus,
    survivor_bytes,
    weighted_sum,
)
from alloykit.methods.streaming import Chunk, Observer, StreamingFactory, StreamingMerge
from alloykit.methods.task_vector_settings import METHODS, TaskVectorMethod


class TaskVectorMerge(StreamingMerge):
    """``base + scale * combine(weight_i * sparsify(tensors_i - base))`` over row chunks.

    ``combine`` is the sign-consensus disjoint sum when ``sign_rule`` is set (TIES), a plain
    sum otherwise; signs are elected on the weighted task vectors and ``normalize`` divides by
    the (agreeing) weights. Whole-tensor statistics (magnitude cut-offs, L1 norms) are passes
    over the chunks; model ``i``'s random draws come from its own generator
    (:func:`~alloykit.methods.steps.model_seed`).
    """

    reads_stored = True  # the fused kernels read bfloat16; the torch path widens first
    reads_views = True  # the fused kernels write elsewhere; the torch path widens a copy

    def __init__(
        self,
        shape: tuple[int, ...],
        dtype: torch.dtype,
        *,
        weight: torch.Tensor,
        sparsification: Sparsification | None = None,
        density: torch.Tensor | None = None,
        gamma: torch.Tensor | None = None,
        epsilon: torch.Tensor | None = None,
        rescale_mode: RescaleMode | None = None,
        sign_rule: SignRule | None = None,
        normalize: bool = False,
        scale: float = 1.0,
        seed: int = 0,
    ) -> None:
        self.weight = weight
        self.dtype = dtype
        self.sign_rule = sign_rule
        self.normalize = normalize
        self.scale = scale
        numel = 1
        for d in shape:
            numel *= d
        self.sparsifiers: list[Sparsifier] = []
        if sparsification is not None and density is not None:
            n = weight.numel()
            densities = per_model(density)
            gammas = per_model(gamma) if gamma is not None else [0.0] * n
            epsilons = per_model(epsilon) if epsilon is not None else [0.0] * n
            bits = n * survivor_bytes(numel) <= KEPT_BITS_BYTES  # for all models, or none
            self.sparsifiers = [
                Sparsifier(
                    sparsification,
                    numel,
                    dtype,
                    density=densities[i],
                    gamma=gammas[i],
                    epsilon=epsilons[i],
                    rescale_mode=rescale_mode,
                    seed=model_seed(seed, i),
                    record_survivors=bits,
                )
                for i in range(n)
            ]

    def passes(self) -> Iterator[Observer]:
        levels = max((s.levels for s in self.sparsifiers), default=0)
        for _ in range(levels):
            yield self._count
            for sparsifier in self.sparsifiers:
                sparsifier.settle()
        measured = [s for s in self.sparsifiers if s.needs_l1]
        if measured:
            self._start_scan()
            yield self._measure
            for sparsifier in measured:
                sparsifier.settle_l1()
        self._start_scan()

    def _fused(self, chunk: Chunk) -> bool:
        """Whether this chunk goes through the fused kernels (:mod:`alloykit.native`)."""
        usable = native.usable_stored if chunk.stored else native.usable
        return (
            usable(chunk.tensors, chunk.base)
            and chunk.tensors.shape[0] <= native.MAX_MODELS
            and self.weight.dim() == 1
        )

    def merge(self, chunk: Chunk) -> torch.Tensor:
        assert chunk.base is not None
        if self._fused(chunk):
            return self._merge_fused(chunk)
        chunk = chunk.widened(self.dtype)
        assert chunk.base is not None
        deltas = chunk.tensors.sub_(chunk.base)
        for delta, sparsifier in zip(deltas, self.sparsifiers, strict=False):
            sparsifier.apply(delta)
        weighted = deltas.mul_(broadcast_weights(self.weight, deltas))
        if self.sign_rule is None:
            merged = weighted_sum(weighted, self.weight, self.normalize)
        else:
            agree = sign_consensus(weighted, self.sign_rule)
            merged = disjoint_sum(weighted, self.weight, agree, self.normalize)
        if self.scale != 1:
            merged = merged * self.scale
        return merged.add_(chunk.base)

    def _merge_fused(self, chunk: Chunk) -> torch.Tensor:
        assert chunk.base is not None
        x, base = chunk.tensors, chunk.base
        weights = self.weight.tolist()
        if self.sparsifiers:
            keeps = [
                sparsifier.native_keep(x[m], base, weights[m], m, chunk.offset)
                for m, sparsifier in enumerate(self.sparsifiers)
            ]
        else:
            keeps = native.keep_every(weights)
        divide_by = 1.0
        if self.sign_rule is None:
            divide_by = weight_divisor(weights, self.normalize)
        out = chunk.out
        if out is None:  # each value of x[0] is read before it is overwritten, when it may be
            out = torch.empty_like(base, dtype=torch.float32) if chunk.read_only else x[0]
        native.task_vectors(
            x, base, keeps, sign=sign_vote(self.sign_rule), normalize=self.normalize,
            divide_by=divide_by, scale=self.scale, out=out,
        )  # fmt: skip
        for sparsifier, keep in zip(self.sparsifiers, keeps, strict=False):
            sparsifier.native_done(keep)
        return out

    def _count(self, chunk: Chunk) -> None:
        assert chunk.base is not None
        if self._fused(chunk):
            for x, sparsifier in zip(chunk.tensors, self.sparsifiers, strict=False):
                if sparsifier.levels:
                    sparsifier.count_deltas(x, chunk.base)
            return
        chunk = chunk.widened(self.dtype)
        assert chunk.base is not None
        deltas = chunk.tensors.sub_(chunk.base)
        for delta, sparsifier in zip(deltas, self.sparsifiers, strict=False):
            if sparsifier.levels:
                sparsifier.count(delta)

    def _measure(self, chunk: Chunk) -> None:
        assert chunk.base is not None
        if self._fused(chunk):
            measured = {m: s for m, s in enumerate(self.sparsifiers) if s.needs_l1}
            measure_deltas(measured, chunk.tensors, chunk.base, chunk.offset)
            return
        chunk = chunk.widened(self.dtype)
        assert chunk.base is not None
        deltas = chunk.tensors.sub_(chunk.base)
        for delta, sparsifier in zip(deltas, self.sparsifiers, strict=False):
            if sparsifier.needs_l1:
                sparsifier.measure(delta)

    def _start_scan(self) -> None:
        for sparsifier in self.sparsifiers:
            sparsifier.start_scan()


def streaming_of(method: TaskVectorMethod) -> StreamingFactory:
    """The streaming factory of ``method``: its settings applied to a recipe's parameters."""

    def streaming(shape: tuple[int, ...], dtype: torch.dtype, **params: Any) -> TaskVectorMerge:
        options = method.options(params)
        return TaskVectorMerge(
            shape,
            dtype,
            weight=params["weight"],
            sparsification=options.sparsification,
            density=params.get("density"),
            gamma=params.get("gamma"),
            epsilon=params.get("epsilon"),
            rescale_mode=options.rescale_mode,
            sign_rule=options.sign_rule,
            normalize=options.normalize,
            scale=options.scale,
            seed=options.seed,
        )

    return streaming


for _method in METHODS:
    register_streaming(_method.name, streaming_of(_method))
