"""The stored lane: tensors whose inputs are all bfloat16 in safetensors files, merged on CPU in
float32 by the fused kernels over numpy buffers, with no torch at all.

Why a lane of its own: for linear, task arithmetic, DARE and Model Stock the kernels read
bfloat16 as stored and do all the arithmetic, so torch only costs: its import (about 3 s here,
as long as reading and writing a whole 1.1B model) and, per chunk, the views, staging lookups and
small tensor operations the general path makes under the GIL (about 2 s of a 1.1B linear
merge). The lane reads rows with positional reads on descriptors kept open, into per-thread
buffers, and writes the merged rows at their place (docs/engine.md has the measurements).

What it computes is what the torch path computes on the same tensors, bit for bit: the same
kernels with the same arguments (:mod:`alloykit.methods.stored`); tests compare the two.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

import numpy as np

from alloykit import native
from alloykit.checkpoint.safetensors_format import TensorEntry, read_into
from alloykit.dtypes import BF16, F32
from alloykit.errors import NonFiniteError
from alloykit.methods.stored import StoredChunk, StoredMerge, stored_merge

if TYPE_CHECKING:
    from alloykit.plan import Plan, PlanEntry


class ByteSink(Protocol):
    def write_bytes(self, name: str, first_row: int, data: np.ndarray, rows: int) -> None: ...

    def finish(self, name: str) -> None: ...


def lane_merge(plan: Plan, entry: PlanEntry) -> StoredMerge | None:
    """The lane's merge of ``entry``, or ``None`` where the entry needs the torch path: an
    input not bfloat16 in a safetensors file, rows copied past a vocabulary mismatch, an output
    dtype other than bfloat16 or float32, a method or parameters the lane does not run, a
    method that takes statistics.
    (The device and compute dtype are the caller's to check.)"""
    if entry.statistics or len(entry.shape) < 1 or entry.common_rows is not None:
        return None
    if entry.dtype not in (BF16, F32):
        return None
    for ref in _refs(entry):
        stored = plan.sources[ref.model].entry(ref.name)
        if stored is None or stored.dtype != BF16 or stored.shape != entry.shape:
            return None
    per_model = {name: [float(v) for v in values] for name, values in entry.per_model.items()}
    numel = entry.shape[0] * entry.row_numel
    return stored_merge(
        entry.method, per_model, dict(entry.globals), len(entry.inputs), numel=numel,
        seed=entry.seed,
    )  # fmt: skip


def _refs(entry: PlanEntry) -> list:
    return [*entry.inputs, *([entry.base] if entry.base is not None else [])]


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
    """One entry's inputs (models, then the base) read as stored, in chunks of rows."""

    def __init__(self, plan: Plan, entry: PlanEntry, files: Descriptors, buffers: Buffers):
        self.entry = entry
        self.refs = _refs(entry)
        self.stored = [plan.sources[r.model].entry(r.name) for r in self.refs]
        self.files = files
        self.buffers = buffers
        self.row_numel = entry.row_numel
        self.held: np.ndarray | None = None

    def hold(self, limit: int) -> None:
        """Read every input whole, once, when they total at most ``limit`` bytes: a merge
        that takes several passes then reads the disk (page cache) once."""
        numel = self.entry.shape[0] * self.row_numel
        if len(self.refs) * numel * 2 > limit:
            return
        held = self.buffers.get("held", len(self.refs) * numel, np.uint16)
        for slot in range(len(self.refs)):
            self._read(slot, 0, self.entry.shape[0], held[slot * numel : (slot + 1) * numel])
        self.held = held

    def _read(self, slot: int, start: int, stop: int, into: np.ndarray) -> None:
        stored = self.stored[slot]
        assert stored is not None
        read_into(stored, start, stop, into, fd=self.files.of(stored))

    def chunks(
        self, step: int, *, check: bool
    ) -> Iterator[tuple[int, int, StoredChunk, np.ndarray]]:
        """``(first_row, rows, chunk, out)`` in row order, ``out`` the per-thread float32
        buffer at ``chunk.out``. With ``check``, every input value is checked finite first: a
        kernel may discard a NaN (trimming) and hide it."""
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
            offset = start * self.row_numel
            chunk = StoredChunk(address, count, stride, base, numel, out.ctypes.data, offset)
            yield start, rows, chunk, out

    def fail_non_finite(self, slot: int, values: np.ndarray) -> None:
        ref = self.refs[slot]
        exponent_ones = (values & 0x7F80) == 0x7F80
        kind = "NaN" if bool(np.any(exponent_ones & ((values & 0x7F) != 0))) else "infinite values"
        raise NonFiniteError(
            f"tensor {ref.name!r} of model {ref.model!r} contains {kind}",
            "the checkpoint is corrupt or was saved after a diverged training run",
        )


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
    """Merge ``entry`` (for which :func:`lane_merge` gave ``merging``) into ``sink``."""
    inputs = _Inputs(plan, entry, files, buffers)
    step = plan.chunk_rows(entry, chunk_elements)
    passes = merging.passes()
    first = next(passes, None)
    if first is not None:
        inputs.hold(hold_bytes)
    checked = False
    for observe in itertools.chain([first] if first is not None else [], passes):
        for _, _, chunk, _ in inputs.chunks(step, check=not checked):
            observe(chunk)
        checked = True
    for first_row, rows, chunk, merged in inputs.chunks(step, check=not checked):
        merging.merge(chunk)
        if entry.dtype == BF16:
            data = buffers.get("narrowed", chunk.numel, np.uint16)
            finite = native.narrow_bf16_at(chunk.out, data.ctypes.data, chunk.numel)
        else:
            data, finite = merged, bool(np.isfinite(merged).all())
        if not finite:
            raise NonFiniteError(
                f"merging {entry.name!r} with {entry.method!r} produced NaN or infinite values",
                "check the method's parameters (e.g. weights summing to zero with normalize)",
            )
        sink.write_bytes(entry.name, first_row, data, rows)
    sink.finish(entry.name)
