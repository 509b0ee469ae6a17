"""What a merge keeps resident: the peak memory ``--dry-run`` estimates.

A merge's resident set is the interpreter with its imports (torch's is most of it, when a tensor
takes the torch path) plus, per worker thread, the buffers that thread reuses from tensor to
tensor (:class:`~alloykit.engine.tensors.Staging`, :class:`~alloykit.engine.raw.Buffers`):
they grow to the largest tensor the thread merged and stay. The largest of them is a tensor's
inputs held whole over several passes (up to :data:`~alloykit.engine.HOLD_BYTES`); then the
chunks in the compute dtype and the method's temporaries; the torch-free raw path adds DARE's
survivor bits. A tensor merged whole (an SVD method) adds, while its kernel runs, the
temporaries its contract declares (:meth:`alloykit.plan.Plan.whole_tensor_bytes`); the engine's
byte budget decides which of those run at once, so the estimate follows its admission.
Page cache is not counted: inputs are read with positional reads, not mapped.
``benchmarks/memory_estimate.py`` compares the estimate with measured peaks.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from alloykit import engine
from alloykit.dtypes import BF16
from alloykit.methods import get_method
from alloykit.methods.step_choices import RescaleMode, Sparsification
from alloykit.methods.stored import StoredMerge
from alloykit.methods.task_vector_settings import METHODS as TASK_VECTOR_METHODS
from alloykit.units import human_bytes

if TYPE_CHECKING:
    from alloykit.plan import Plan, PlanEntry

INTERPRETER_BYTES = 60 * 1024**2
"""Python with alloykit, numpy and the kernels imported (56 MB measured, see
benchmarks/README.md)."""
TORCH_BYTES = 200 * 1024**2
"""What ``import torch`` adds (the CPU build; 195 MB measured)."""
THREAD_BYTES = 24 * 1024**2
"""Per worker thread on the torch path: its malloc arena and torch's per-thread state."""
PASSES = frozenset(("slerp", "model_stock", "sce"))
"""Methods outside the task-vector family whose streaming merge makes statistics passes over
a tensor's rows before merging it (a test checks this against the merges themselves)."""


def estimated_peak_bytes(plan: Plan, options: engine.EngineOptions) -> int:
    """Peak resident bytes of executing ``plan`` with ``options``: the imports, the buffers of
    the ``threads`` largest tensors (each thread keeps those of the largest it merged), and
    the temporaries of the whole tensors that the budget lets run at once."""
    chunk = options.chunk_size()
    raw = engine._raw_merges(plan, plan.entries, options)
    order = engine.execution_order(plan.entries)
    kept, temporary = [], []
    for entry in order:
        if entry.name in raw:
            kept.append(_raw_bytes(plan, entry, raw[entry.name], chunk))
            temporary.append(0)
        else:
            staging, temporaries = _torch_bytes(plan, entry, chunk)
            kept.append(staging)
            temporary.append(temporaries)
    threads = max(1, min(options.threads, len(order)))
    torch_path = len(raw) < len(plan.entries)
    base = INTERPRETER_BYTES + (TORCH_BYTES + threads * THREAD_BYTES if torch_path else 0)
    buffers = sum(sorted(kept, reverse=True)[:threads])
    working = [plan.working_bytes(entry, chunk) for entry in order]
    at_once = max(
        (sum(temporary[i] for i in group) for group in _admitted_together(working, options)),
        default=0,
    )
    return base + buffers + at_once


def _admitted_together(working: list[int], options: engine.EngineOptions) -> list[range]:
    """The runs of consecutive entries (in execution order, with these working-memory bounds)
    that the engine's budget and thread count let run at once: an entry joins those before it
    while there is a free thread and its bound fits in the budget beside theirs; one larger than
    the budget runs alone (:class:`alloykit.engine._Budget`)."""
    groups = []
    threads = max(1, options.threads)
    for start in range(len(working)):
        used, stop = 0, start
        while stop < len(working) and stop - start < threads:
            amount = min(working[stop], options.budget_bytes)
            if used and used + amount > options.budget_bytes:
                break
            used += amount
            stop += 1
        groups.append(range(start, stop))
    return groups


def budget_warnings(plan: Plan, options: engine.EngineOptions) -> list[str]:
    """A warning for the largest tensor merged whole when its working set alone exceeds the
    engine's byte budget: it cannot be split, so it runs alone and the merge exceeds the budget."""
    entry, bound = plan.largest_working(options.chunk_size(), whole_tensor=True)
    if entry is None or bound <= options.budget_bytes:
        return []
    return [
        f"{entry.name} ({whole_tensor_summary(entry)}) is merged whole and needs "
        f"~{human_bytes(bound)}, more than the memory budget {human_bytes(options.budget_bytes)}: "
        "it runs alone and the merge's memory exceeds the budget there "
        "(raise --memory-budget, or merge this tensor with a streaming method)"
    ]


def whole_tensor_summary(entry: PlanEntry) -> str:
    """``32000x512 x (3 models + base)``: the shape of a tensor merged whole and the tensors
    that feed it."""
    shape = "x".join(str(n) for n in entry.shape)
    count = len(entry.inputs)
    base = " + base" if entry.base is not None else ""
    return f"{shape} x ({count} model{'s' if count != 1 else ''}{base})"


def reads_twice(entry: PlanEntry) -> bool:
    """Whether the torch path's merge of ``entry`` makes passes over its rows before merging
    (whole-tensor statistics: cut-offs, L1 norms, angles), so that the engine holds its inputs."""
    if entry.method in PASSES:
        return True
    settings = next((m for m in TASK_VECTOR_METHODS if m.name == entry.method), None)
    if settings is None:
        return False
    options = settings.options(entry.globals)
    cut = options.sparsification in (Sparsification.MAGNITUDE, Sparsification.BREADCRUMBS)
    return cut or (options.rescale_mode is RescaleMode.L1 and settings.random)


def _torch_bytes(plan: Plan, entry: PlanEntry, chunk_elements: int) -> tuple[int, int]:
    """``(kept, temporary)``: the torch path's buffers for ``entry``, which its thread keeps,
    and the temporaries its kernel frees again (those of a tensor merged whole)."""
    if not get_method(entry.method).streams and entry.shape:
        return plan.whole_tensor_bytes(entry)
    slots = len(entry.inputs) + (entry.base is not None)
    numel = math.prod(entry.shape)
    stored = max(plan.sources[r.model].tensors[r.name].dtype.itemsize for r in _refs(entry))
    values = plan.chunk_rows(entry, chunk_elements) * entry.row_numel if entry.shape else 1
    held = slots * numel * stored
    if not (get_method(entry.method).streams and reads_twice(entry)) or held > engine.HOLD_BYTES:
        held = 0
    read = slots * values * stored  # staged as read, before the compute dtype
    working = plan.working_bytes(entry, chunk_elements)
    return held + working + read + values * entry.dtype.itemsize, 0


def _raw_bytes(plan: Plan, entry: PlanEntry, merging: StoredMerge, chunk_elements: int) -> int:
    slots = len(entry.inputs) + (entry.base is not None)
    numel = math.prod(entry.shape)
    values = plan.chunk_rows(entry, chunk_elements) * entry.row_numel
    held = slots * numel * BF16.itemsize
    if next(iter(merging.passes()), None) is None or held > engine.HOLD_BYTES:
        held = 0
    buffers = slots * values * BF16.itemsize + values * (4 + BF16.itemsize)  # stack, out, narrowed
    survivors = len(entry.inputs) * math.ceil(numel / 8) if get_method(entry.method).random else 0
    return held + buffers + survivors


def _refs(entry: PlanEntry) -> list:
    return [*entry.inputs, *([entry.base] if entry.base is not None else [])]
