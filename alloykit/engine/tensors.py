"""The torch path of the engine: any method, any dtype, CPU or CUDA.

Rows of each input are read into staging buffers (pinned when they go to a GPU), widened to
the compute dtype (or kept as stored for merges that read bfloat16), merged by the method's
:class:`~alloykit.methods.streaming.StreamingMerge`, cast once to the output dtype and handed
to the sink. This module is the path's reader (:class:`_Inputs`, an
:class:`~alloykit.engine.loop.EntryReader` of torch chunks) and the method's merge with its
parameters and statistics as tensors; the loop over passes and chunks is the engine's one loop
(:func:`alloykit.engine.loop.merge_entry`). :mod:`alloykit.engine` decides which tensors
come here and runs the threads.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from alloykit import engine, native
from alloykit.checkpoint.source import ModelSource
from alloykit.engine import loop
from alloykit.errors import AlloyError
from alloykit.methods import get_method
from alloykit.methods.streaming import Chunk, KernelMerge, StreamingMerge
from alloykit.plan import Plan, PlanEntry, TensorRef

if TYPE_CHECKING:
    from alloykit.engine import Sink

CPU = torch.device("cpu")
PARAMETER_CACHE = 256
"""Distinct per-model parameter lists a :class:`Staging` keeps as tensors."""


def resolve_device(name: str) -> torch.device:
    """The torch device for ``--device``; bad input (unknown, absent) is an AlloyError."""
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise AlloyError(f"--device: unknown device {name!r}", "use cpu or cuda[:N]")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AlloyError(f"--device {name}: no CUDA device is available", "use --device cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise AlloyError(
            f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) visible",
            "use a smaller index, or check CUDA_VISIBLE_DEVICES",
        )
    return device


class Staging(threading.local):
    """Per-thread buffers reused from chunk to chunk: bytes read from disk (pinned when they go
    to a GPU, for asynchronous copies) and the stacked inputs in the compute dtype. Fresh
    buffers for every chunk would cost a page fault per 4 KiB touched.

    An engine run makes one; an :class:`alloykit.Merger` keeps one from merge to merge, and
    with it what each merge would otherwise derive again per tensor (a few microseconds
    each, which add up to a third of an in-memory re-merge of small tensors): each resident
    tensor's :class:`_Layout`, and the parameter tensors of each distinct list of values."""

    def __init__(self) -> None:
        self.buffers: dict[object, torch.Tensor] = {}
        self.copied: torch.cuda.Event | None = None
        self.layouts: dict[str, _Layout] = {}
        self.parameters: dict[tuple[tuple[Any, ...], torch.device], torch.Tensor] = {}

    def parameter(self, values: tuple[Any, ...], device: torch.device) -> torch.Tensor:
        """Per-model parameter ``values`` as a float32 tensor on ``device``, made once per
        distinct values and shared by every tensor merged with them (kernels do not modify
        their parameters). Float32 whatever the compute dtype: kernels recover the decimal
        the user wrote (numpy rounds as ``torch.tensor`` does, in a tenth of the time)."""
        key = (values, device)
        found = self.parameters.get(key)
        if found is None:
            if len(self.parameters) >= PARAMETER_CACHE:  # a search's values change every merge
                self.parameters.clear()
            found = torch.from_numpy(np.array(values, dtype=np.float64).astype(np.float32))
            self.parameters[key] = found = found.to(device)
        return found

    def buffer(self, slot: int, nbytes: int, *, pinned: bool) -> torch.Tensor:
        """Bytes read from disk for input ``slot``."""
        return self._reused(slot, (nbytes,), torch.uint8, pinned=pinned)

    def output(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """A CPU tensor for a chunk's merged rows in the output dtype (the sink writes it
        before the next chunk is merged)."""
        return self._reused(("output", dtype), shape, dtype)

    def held(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """A CPU tensor for inputs held whole over several passes, reused from tensor to
        tensor: a fresh one per tensor cost two million page faults (9.8 s of system time) in
        a 1.1B TIES merge."""
        return self._reused(("held", dtype), shape, dtype)

    def stacked(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device):
        """A tensor of ``shape`` in a reused buffer (its previous contents are garbage)."""
        return self._reused(("stacked", dtype, device), shape, dtype, device=device)

    def _reused(
        self,
        key: object,
        shape: tuple[int, ...],
        dtype: torch.dtype,
        *,
        device: torch.device = CPU,
        pinned: bool = False,
    ) -> torch.Tensor:
        """A tensor of ``shape`` viewing the buffer kept under ``key``, grown when too small
        (the old one is freed before the larger one is made)."""
        numel = math.prod(shape)
        kept = self.buffers.get(key)
        if kept is None or kept.numel() < numel:
            self.buffers.pop(key, None)
            kept = torch.empty(numel, dtype=dtype, device=device, pin_memory=pinned)
            self.buffers[key] = kept
        return kept[:numel].view(shape)


class _Inputs:
    """Reads rows of one entry's inputs (models, then the base) for the engine's chunks, and
    writes the merged rows cast to the output dtype (an
    :class:`~alloykit.engine.loop.EntryReader` of :class:`~alloykit.methods.streaming.Chunk`).

    Sources that read rows from disk are read a chunk at a time; others (adapters applied on
    read, pickles, derived tensors) are read whole once and sliced.
    """

    def __init__(
        self,
        plan: Plan,
        entry: PlanEntry,
        device: torch.device,
        staging: Staging,
        sink: Sink,
    ):
        self.plan = plan
        self.entry = entry
        self.device = device
        self.staging = staging
        self.sink = sink
        self.stored = False  # chunks are bfloat16 as stored (set by prepare)
        self.views = False  # chunks view the resident stack (set by prepare)
        self.stack: torch.Tensor | None = None  # every input held, stacked as stored
        self.layout = staging.layouts.get(entry.name)
        if self.layout is None or not self.layout.describes(plan, entry):
            self.layout = _Layout.of(plan, entry)
            if self.layout.resident is not None:  # the same at every merge of a Merger
                staging.layouts[entry.name] = self.layout
        self.refs = self.layout.refs
        self.held = self.layout.held  # hold() adds to it only when nothing is resident
        self.unchecked = self.layout.unchecked  # slots not checked once and for all
        self.resident = self.layout.resident
        self.in_place = None  # rows_in_place of the sink, when merges may write there
        if entry.dtype == plan.compute_dtype and hasattr(sink, "rows_in_place"):
            self.in_place = sink.rows_in_place

    def hold(self) -> None:
        """Read every input whole, once, if they are small enough to keep for several passes.
        Inputs of one shape and dtype are read into one stack (a per-thread buffer reused from
        tensor to tensor), whose rows the chunks of stored inputs view. Resident inputs are
        held already."""
        if self.resident is not None:
            return
        sources = [self.plan.sources[ref.model] for ref in self.refs]
        size = sum(src.nbytes(ref.name) for src, ref in zip(sources, self.refs, strict=True))
        if size > engine.HOLD_BYTES:
            return
        metas = [src.tensors[ref.name] for src, ref in zip(sources, self.refs, strict=True)]
        dtypes = {
            self.held[i].dtype if i in self.held else m.dtype.torch for i, m in enumerate(metas)
        }
        same_shape = {m.shape for m in metas} == {tuple(self.entry.shape)}
        if self.entry.shape and same_shape and len(dtypes) == 1:
            self._hold_stacked(sources, dtypes.pop())
            return
        for slot, (source, ref) in enumerate(zip(sources, self.refs, strict=True)):
            if slot not in self.held:
                self.held[slot] = source.read(ref.name)

    def _hold_stacked(self, sources: list[ModelSource], dtype: torch.dtype) -> None:
        self.stack = self.staging.held((len(self.refs), *self.entry.shape), dtype)
        for slot, ref in enumerate(self.refs):
            if slot in self.held:
                self.stack[slot].copy_(self.held[slot])
            else:
                into = self.stack[slot].view(-1).view(torch.uint8)
                sources[slot].read_rows(ref.name, 0, self.entry.shape[0], into)
            self.held[slot] = self.stack[slot]

    def rows(
        self, slot: int, start: int, stop: int, into: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Rows ``[start, stop)`` of input ``slot`` as stored (CPU, stored dtype), read into
        the byte buffer ``into`` when given, else into a staging buffer."""
        held = self.held.get(slot)
        if held is not None:
            return held[start:stop] if held.dim() else held
        ref = self.refs[slot]
        source = self.plan.sources[ref.model]
        meta = source.tensors[ref.name]
        if into is None:
            row_bytes = source.nbytes(ref.name) // max(1, meta.shape[0] if meta.shape else 1)
            pinned = self.device.type == "cuda"
            into = self.staging.buffer(slot, (stop - start) * row_bytes, pinned=pinned)
        return source.read_rows(ref.name, start, stop, into)

    def can_stay_stored(self) -> bool:
        """Whether every input is stored in bfloat16 and the fused kernels can read them so
        (CPU, float32 compute, the kernels built): see :attr:`StreamingMerge.reads_stored`.
        Resident inputs are in the compute dtype, never stored bfloat16."""
        if self.resident is not None:
            return False
        if not (native.available() and self.device.type == "cpu" and self.entry.shape):
            return False
        if self.plan.compute_dtype.torch != torch.float32:
            return False
        for slot, ref in enumerate(self.refs):
            held = self.held.get(slot)
            meta = self.plan.sources[ref.model].tensors[ref.name]
            if (held.dtype if held is not None else meta.dtype.torch) != torch.bfloat16:
                return False
        return True

    def prepare(self, merging: StreamingMerge) -> None:
        """Read chunks as stored when ``merging`` takes them so and :meth:`can_stay_stored`;
        view the resident stack when ``merging`` takes views and the stack is in the compute
        dtype."""
        self.stored = merging.reads_stored and self.can_stay_stored()
        self.views = (
            merging.reads_views
            and self.resident is not None
            and self.resident.dtype == self.plan.compute_dtype.torch
        )

    def chunks(self, step: int, *, check: bool) -> Iterator[Chunk]:
        """The merged rows in chunks of ``step`` rows, in the compute dtype on the device, or
        as stored, or viewing the resident stack (see :meth:`prepare`). Inputs checked
        finite once and for all (:meth:`ModelSource.checked_finite`) are not checked again."""
        if self.stored:
            yield from self._stored_chunks(step, check=check)
            return
        if self.views:
            yield from self._resident_chunks(step, check=check)
            return
        entry, dtype = self.entry, self.plan.compute_dtype.torch
        total = entry.merged_rows
        shape = (total, *entry.shape[1:]) if entry.shape else ()
        count = len(entry.inputs)
        for start in range(0, max(total, 1), step):
            stop = min(start + step, total) if entry.shape else 1
            if self.staging.copied is not None:
                self.staging.copied.synchronize()  # pinned buffers are free to refill
            part = (stop - start, *shape[1:]) if entry.shape else ()
            slots = count + (entry.base is not None)
            buffer = self.staging.stacked((slots, *part), dtype, self.device)
            to_check = self.unchecked if check else []
            if self.resident is not None:  # one copy of every input's rows
                buffer.copy_(self.resident[:, start:stop])
            else:
                widened = self._read_chunk(buffer, start, stop, check=check)
                to_check = [slot for slot in to_check if slot not in widened]
            stacked = buffer[:count]
            base = buffer[count] if entry.base is not None else None
            if self.device.type == "cuda":
                self.staging.copied = torch.cuda.Event()
                self.staging.copied.record()
            for slot in to_check:
                if not _all_finite(buffer[slot]):
                    self.fail_non_finite(slot, buffer[slot])
            out = self._out(start, stop) if entry.shape else None
            yield Chunk(stacked, base, start, shape, out=out)

    def _read_chunk(self, buffer: torch.Tensor, start: int, stop: int, *, check: bool) -> set[int]:
        """Rows ``[start, stop)`` of every input into ``buffer`` (the compute dtype); returns
        the slots widened from bfloat16 and checked finite in the same pass."""
        widened = set()
        for slot in range(buffer.shape[0]):
            rows = self.rows(slot, start, stop)
            if native.widens(rows, buffer[slot]):  # widened and checked in one pass
                if not native.widen_bf16(rows, buffer[slot]) and check:
                    self.fail_non_finite(slot, buffer[slot])
                widened.add(slot)
            else:
                buffer[slot].copy_(rows, non_blocking=True)
        return widened

    def _resident_chunks(self, step: int, *, check: bool) -> Iterator[Chunk]:
        """:meth:`chunks` viewing the resident stack: nothing is copied."""
        entry = self.entry
        shape = (entry.merged_rows, *entry.shape[1:])
        for start, stop, models, base in self.layout.views(entry, step):
            for slot in self.unchecked if check else ():
                rows = models[slot] if slot < len(models) else base
                if not _all_finite(rows):
                    self.fail_non_finite(slot, rows)
            out = self._out(start, stop)
            yield Chunk(models, base, start, shape, views=True, out=out)

    def _out(self, start: int, stop: int) -> torch.Tensor | None:
        """Rows of the sink's own tensor where the merge may write, or None."""
        if self.in_place is None:
            return None
        dtype = self.entry.dtype.torch
        return self.in_place(self.entry.name, start, stop, dtype, self.device)

    def _stored_chunks(self, step: int, *, check: bool) -> Iterator[Chunk]:
        """:meth:`chunks` of bfloat16 inputs as stored, read straight into the stacked buffer."""
        entry = self.entry
        total = entry.merged_rows
        shape = (total, *entry.shape[1:])
        count = len(entry.inputs)
        slots = count + (entry.base is not None)
        for start in range(0, max(total, 1), step):
            stop = min(start + step, total)
            if self.stack is not None:  # views of the held inputs: nothing to copy
                buffer = self.stack[:, start:stop]
                if check:
                    for slot in range(slots):
                        if not native.finite_bf16(buffer[slot]):
                            self.fail_non_finite(slot, buffer[slot])
                base = buffer[count] if entry.base is not None else None
                yield Chunk(buffer[:count], base, start, shape, stored=True)
                continue
            buffer = self.staging.stacked((slots, stop - start, *shape[1:]), torch.bfloat16, CPU)
            for slot in range(slots):
                target = buffer[slot]
                if slot in self.held:
                    target.copy_(self.rows(slot, start, stop))
                else:
                    self.rows(slot, start, stop, into=target.view(-1).view(torch.uint8))
                if check and not native.finite_bf16(target):
                    self.fail_non_finite(slot, target)
            base = buffer[count] if entry.base is not None else None
            yield Chunk(buffer[:count], base, start, shape, stored=True)

    def fail_non_finite(self, slot: int, rows: torch.Tensor) -> None:
        raise loop.non_finite_input(self.refs[slot], bool(torch.isnan(rows).any()))

    def write(self, chunk: Chunk, merged: torch.Tensor) -> bool:
        """Cast ``merged`` to the output dtype (checking it finite) and write it (unless the
        merge wrote it in the sink's place, :attr:`Chunk.out`)."""
        if merged is chunk.out:
            return _all_finite(merged)
        out = self.staging.output(merged.shape, self.entry.dtype.torch)
        if native.narrows(merged, out):  # narrowed and checked in one pass
            finite = native.narrow_bf16(merged, out)
        else:
            finite, out = _all_finite(merged), merged.to(self.entry.dtype.torch).cpu()
        if finite:
            self.sink.write_rows(self.entry.name, chunk.first_row, out)
        return finite

    def finish(self, step: int) -> None:
        """Rows past ``common_rows`` (vocabulary mismatch) come from the base, else the first
        model; then the tensor is complete."""
        entry = self.entry
        if entry.common_rows is not None:
            lead = len(entry.inputs) if entry.base is not None else 0
            for start in range(entry.common_rows, entry.shape[0], step):
                stop = min(start + step, entry.shape[0])
                rows = self.rows(lead, start, stop).to(self.plan.compute_dtype.torch)
                self.sink.write_rows(entry.name, start, rows.to(entry.dtype.torch))
        self.sink.finish(entry.name)


@dataclass
class _Layout:
    """What a reader of one entry derives from the sources: its inputs (models, then the
    base), those the sources keep whole, those not checked finite once and for all, and the
    resident stack holding them all, with the views of it each chunk size reads. Resident
    inputs never change, so a :class:`Staging` kept by a Merger keeps this from merge to
    merge (:meth:`describes` says whether it still applies)."""

    sources: dict[str, ModelSource]
    inputs: tuple[TensorRef, ...]
    base: TensorRef | None
    refs: list[TensorRef]
    held: dict[int, torch.Tensor]
    unchecked: list[int]
    resident: torch.Tensor | None
    chunk_views: dict[int, list[tuple[int, int, torch.Tensor, torch.Tensor | None]]] = field(
        default_factory=dict
    )

    @classmethod
    def of(cls, plan: Plan, entry: PlanEntry) -> _Layout:
        refs = entry.all_inputs
        held, unchecked, places = {}, [], []
        for slot, ref in enumerate(refs):
            source = plan.sources[ref.model]
            if not source.reads_rows(ref.name):
                held[slot] = source.read(ref.name)
            if not source.checked_finite(ref.name):
                unchecked.append(slot)
            places.append(source.stacked(ref.name))
        resident = _resident_stack(places)
        return cls(plan.sources, entry.inputs, entry.base, refs, held, unchecked, resident)

    def describes(self, plan: Plan, entry: PlanEntry) -> bool:
        """Whether this is the layout of ``entry``'s inputs in ``plan``: the same sources
        and input references (a re-parameterised plan shares both with its original)."""
        return (
            self.sources is plan.sources and self.inputs is entry.inputs and self.base is entry.base
        )

    def views(
        self, entry: PlanEntry, step: int
    ) -> list[tuple[int, int, torch.Tensor, torch.Tensor | None]]:
        """``(start, stop, models, base)`` of each chunk of ``step`` rows, viewing the
        resident stack."""
        found = self.chunk_views.get(step)
        if found is None:
            assert self.resident is not None
            total, count = entry.merged_rows, len(entry.inputs)
            found = []
            for start in range(0, max(total, 1), step):
                rows = self.resident[:, start : min(start + step, total)]
                base = rows[count] if entry.base is not None else None
                found.append((start, start + rows.shape[1], rows[:count], base))
            self.chunk_views[step] = found
        return found


def _resident_stack(places: list[tuple[torch.Tensor, int] | None]) -> torch.Tensor | None:
    """The stack ``[inputs, *shape]`` holding every input at its slot, in order, where the
    sources keep them so (``places``: :meth:`ModelSource.stacked` of each input); else None."""
    found = None
    for slot, place in enumerate(places):
        if place is None or place[1] != slot or (found is not None and place[0] is not found):
            return None
        found = place[0]
    return found if found is not None and found.shape[0] == len(places) else None


def _all_finite(tensor: torch.Tensor) -> bool:
    """A sum is NaN or infinite whenever an element is, and costs no temporary the size of the
    tensor; only then is the exact element-wise check run (a finite sum can overflow)."""
    return math.isfinite(tensor.sum().item()) or bool(torch.isfinite(tensor).all())


def _merging(
    plan: Plan, entry: PlanEntry, device: torch.device, staging: Staging | None = None
) -> StreamingMerge:
    """The method's merge of this entry, with its parameters on ``device`` (made by
    ``staging``, :meth:`Staging.parameter`)."""
    method = get_method(entry.method)
    params: dict[str, Any] = dict(entry.globals)
    staging = staging or Staging()
    for name, values in entry.per_model.items():
        params[name] = staging.parameter(values, device)
    if method.random:
        params["seed"] = entry.seed
    for name, refs in entry.statistics.items():
        params[name] = read_statistics(plan, refs, device)
    streaming = method.streaming
    if streaming is None:
        return KernelMerge(method.kernel, params)
    shape = (entry.merged_rows, *entry.shape[1:]) if entry.shape else ()
    return streaming(shape, plan.compute_dtype.torch, **params)


def read_statistics(
    plan: Plan, refs: tuple[TensorRef | None, ...], device: torch.device
) -> torch.Tensor | None:
    """One statistic of every input model, stacked ``[n, ...]`` in float32 on ``device``;
    ``None`` when no model has it for this tensor (the planner allows all or none). Each
    model's is read straight into its place in the stack (no second copy of a 1.1B model's
    ``[5632, 5632]`` Grams)."""
    if all(ref is None for ref in refs):
        return None
    files = [plan.statistics[ref.model] for ref in refs if ref is not None]
    assert len(files) == len(refs)
    first = files[0].entries[refs[0].name]
    stack = torch.empty((len(refs), *first.shape), dtype=torch.float32)
    for slot, (file, ref) in enumerate(zip(files, refs, strict=True)):
        file.read(ref.name, into=stack[slot])
    return stack.to(device)


def merge_entry(
    plan: Plan,
    entry: PlanEntry,
    sink: Sink,
    device: torch.device,
    chunk_elements: int,
    staging: Staging | None = None,
) -> None:
    """Merge one output tensor into ``sink``, a chunk of rows at a time."""
    staging = staging or Staging()
    inputs = _Inputs(plan, entry, device, staging, sink)
    step = plan.chunk_rows(entry, chunk_elements)
    if entry.method == "passthrough" and not entry.dtype.is_floating_point:
        for start in range(0, max(entry.merged_rows, 1), step):
            stop = min(start + step, entry.merged_rows)
            sink.write_rows(entry.name, start, inputs.rows(0, start, stop).clone())
        sink.finish(entry.name)
        return
    loop.merge_entry(entry, inputs, lambda: _merging(plan, entry, device, staging), step)


@contextmanager
def single_intra_op_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
