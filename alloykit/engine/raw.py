"""The raw path: tensors whose inputs are all bfloat16 in safetensors files, read as raw bytes
into numpy buffers and merged on CPU in float32 by the fused kernels, with no torch at all.

This module is the path's reader (:class:`_Inputs`, an
:class:`~alloykit.engine.loop.EntryReader`); the loop over passes and chunks is the engine's
one loop (:func:`alloykit.engine.loop.merge_entry`).

Why a path of its own: for linear, task arithmetic, DARE and Model Stock the kernels read
bfloat16 as stored and do all the arithmetic, so torch only costs: its import (about 3 s here,
as long as reading and writing a whole 1.1B model) and, per chunk, the views, staging lookups
and small tensor operations the torch path makes under the GIL (about 2 s of a 1.1B linear
merge). This path reads rows with positional reads on descriptors kept open, into per-thread
buffers, and writes the merged rows at their place (docs/engine.md has the measurements).

What it computes is what the torch path computes on the same tensors, bit for bit: the same
kernels with the same arguments on the same bytes as stored (:mod:`alloykit.methods.stored`);
tests compare the two.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

import numpy as np

from alloykit import native
from alloykit.checkpoint.safetensors_format import TensorEntry, read_into
from alloykit.dtypes import BF16, F32
from alloykit.engine import loop
from alloykit.methods.stored import StoredChunk, StoredMerge, stored_merge

if TYPE_CHECKING:
    from alloykit.plan import Plan, PlanEntry


class ByteSink(Protocol):
    def write_bytes(self, name: str, first_row: int, data: np.ndarray, rows: int) -> None: ...

    def finish(self, name: str) -> None: ...


def merge_for(plan: Plan, entry: PlanEntry) -> StoredMerge | None:
    """The raw path's merge of ``entry``, or ``None`` where the entry needs the torch path: an
    input not bfloat16 in a safetensors file, rows copied past a vocabulary mismatch, an output
    dtype other than bfloat16 or float32, a method or parameters this path does not run, a
    method that takes statistics.
    (The device and compute dtype are the caller's to check.)"""
    if entry.statistics or len(entry.shape) < 1 or entry.common_rows is not None:
        return None
    if entry.dtype not in (BF16, F32):
        return None
    for ref in entry.all_inputs:
        stored = plan.sources[ref.model].entry(ref.name)
        if stored is None or stored.dtype != BF16 or stored.shape != entry.shape:
            return None
    per_model = {name: [float(v) for v in values] for name, values in entry.per_model.items()}
    numel = entry.shape[0] * entry.row_numel
    return stored_merge(
        entry.method, per_model, dict(entry.globals), len(entry.inputs), numel=numel,
        seed=entry.seed,
    )  # fmt: skip


class Descriptors:
    """Input files opened once for a whole merge, not once per chunk."""

    def __init__(self) -> None:
        self._fds: dict[str, int] = {}
        self._lock = threading.Lock()

    def of(self, entry: TensorEntry) -> int:
        path = str(entry.path)
        fd = self._fds.get(path)
        if fd is None:
            with self._lock:
                fd = self._fds.get(path)
                if fd is None:
                    fd = self._fds[path] = os.open(path, os.O_RDONLY)
        return fd

    def close(self) -> None:
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()


class Buffers(threading.local):
    """Per-thread buffers reused from chunk to chunk and tensor to tensor (fresh ones would
    cost a page fault per 4 KiB touched)."""

    def __init__(self) -> None:
        self._kept: dict[str, np.ndarray] = {}

    def get(self, key: str, numel: int, dtype: type) -> np.ndarray:
        kept = self._kept.get(key)
        if kept is None or kept.size < numel:
            self._kept.pop(key, None)  # the old one is freed before the larger one is made
            kept = self._kept[key] = np.empty(numel, dtype=dtype)
        return kept[:numel]


class _Inputs:
    """One entry's inputs (models, then the base) read as stored, in chunks of rows, and its
    merged rows narrowed and written as raw bytes (an :class:`~alloykit.engine.loop.EntryReader`
    of :class:`~alloykit.methods.stored.StoredChunk`)."""

    def __init__(
        self,
        plan: Plan,
        entry: PlanEntry,
        sink: ByteSink,
        *,
        files: Descriptors,
        buffers: Buffers,
        hold_bytes: int,
    ):
        self.entry = entry
        self.sink = sink
        self.refs = entry.all_inputs
        self.stored = [plan.sources[r.model].entry(r.name) for r in self.refs]
        self.files = files
        self.buffers = buffers
        self.hold_bytes = hold_bytes
        self.row_numel = entry.row_numel
        self.held: np.ndarray | None = None
        self.at: tuple[int, int, np.ndarray] | None = None
        """The current chunk's first row, row count, and float32 rows it is merged into."""

    def prepare(self, merging: StoredMerge) -> None:
        """Nothing to choose: chunks are always bfloat16 as stored."""

    def hold(self) -> None:
        """Read every input whole, once, when they total at most ``hold_bytes``: a merge
        that takes several passes then reads the disk (page cache) once."""
        numel = self.entry.shape[0] * self.row_numel
        if len(self.refs) * numel * 2 > self.hold_bytes:
            return
        held = self.buffers.get("held", len(self.refs) * numel, np.uint16)
        for slot in range(len(self.refs)):
            self._read(slot, 0, self.entry.shape[0], held[slot * numel : (slot + 1) * numel])
        self.held = held

    def _read(self, slot: int, start: int, stop: int, into: np.ndarray) -> None:
        stored = self.stored[slot]
        assert stored is not None
        read_into(stored, start, stop, into, fd=self.files.of(stored))

    def chunks(self, step: int, *, check: bool) -> Iterator[StoredChunk]:
        """The inputs' rows in chunks of ``step`` rows, each merged into a per-thread float32
        buffer (at ``chunk.out``)."""
        rows_total = self.entry.shape[0]
        count = len(self.entry.inputs)
        slots = len(self.refs)
        whole = rows_total * self.row_numel
        for start in range(0, rows_total, step):
            rows = min(step, rows_total - start)
            numel = rows * self.row_numel
            if self.held is not None:  # views of the inputs held whole: nothing to read
                values, stride = self.held[start * self.row_numel :], whole
            else:
                values, stride = self.buffers.get("stack", slots * numel, np.uint16), numel
                for slot in range(slots):
                    self._read(slot, start, start + rows, values[slot * numel :][:numel])
            if check:
                for slot in range(slots):
                    part = values[slot * stride :][:numel]
                    if not native.finite_bf16_at(part.ctypes.data, numel):
                        self.fail_non_finite(slot, part)
            address = values.ctypes.data
            base = address + 2 * count * stride if self.entry.base is not None else None
            out = self.buffers.get("out", numel, np.float32)
            self.at = (start, rows, out)
            offset = start * self.row_numel
            yield StoredChunk(address, count, stride, base, numel, out.ctypes.data, offset)

    def fail_non_finite(self, slot: int, values: np.ndarray) -> None:
        exponent_ones = (values & 0x7F80) == 0x7F80
        nan = bool(np.any(exponent_ones & ((values & 0x7F) != 0)))
        raise loop.non_finite_input(self.refs[slot], nan)

    def write(self, chunk: StoredChunk, merged: None) -> bool:
        """Narrow the float32 rows the merge wrote at ``chunk.out`` and write their bytes."""
        assert self.at is not None
        first_row, rows, out = self.at
        if self.entry.dtype == BF16:
            data = self.buffers.get("narrowed", chunk.numel, np.uint16)
            finite = native.narrow_bf16_at(chunk.out, data.ctypes.data, chunk.numel)
        else:
            data, finite = out, bool(np.isfinite(out).all())
        if finite:
            self.sink.write_bytes(self.entry.name, first_row, data, rows)
        return finite

    def finish(self, step: int) -> None:
        self.sink.finish(self.entry.name)


def merge_entry(
    plan: Plan,
    entry: PlanEntry,
    merging: StoredMerge,
    sink: ByteSink,
    *,
    chunk_elements: int,
    hold_bytes: int,
    files: Descriptors,
    buffers: Buffers,
) -> None:
    """Merge ``entry`` (for which :func:`merge_for` gave ``merging``) into ``sink``."""
    inputs = _Inputs(plan, entry, sink, files=files, buffers=buffers, hold_bytes=hold_bytes)
    step = plan.chunk_rows(entry, chunk_elements)
    loop.merge_entry(entry, inputs, lambda: merging, step)
