"""Executes a Plan into a sink: read → compute (fp32, chosen device) → cast once → write.

Each output tensor is merged a chunk of rows at a time (about ``chunk_elements`` values per
input) when its method can stream: rows are read from the checkpoints with positional reads,
merged, cast, and written at their final offset, so memory holds a few chunks instead of whole
tensors, and the working set of a chunk stays in the CPU's caches. Whole-tensor statistics
(slerp's angle, TIES's cut-offs) are extra passes over the rows.

Every tensor goes through one per-entry loop (:mod:`alloykit.engine.loop`: passes, chunks,
finiteness checks, merge, narrowing, writing); two paths feed it: the torch path
(:mod:`alloykit.engine.tensors`, every method and device: chunks are torch tensors) and the
raw path (:mod:`alloykit.engine.raw`: bfloat16 inputs read as stored into numpy buffers and
merged on CPU by the fused kernels, for linear, task arithmetic, DARE and Model Stock).
Both give the same bits; torch is imported only when some tensor needs its path, so a merge
the raw path covers starts without torch's 3-second import.

Output tensors are spread over a pool of worker threads (the kernels, torch and file I/O
release the GIL), so reading, computing and writing overlap; torch's own intra-op threads are
set to one while a merge runs, so results never depend on the thread count. A byte budget
bounds the memory of tensors in flight; each tensor's result depends only on its inputs and
its own seed.
"""

from __future__ import annotations

import gc
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from alloykit import native
from alloykit.dtypes import F32
from alloykit.errors import AlloyError
from alloykit.quiet_imports import collector_paused

if TYPE_CHECKING:
    from alloykit.engine.tensors import Staging
    from alloykit.methods.stored import StoredMerge
    from alloykit.plan import Plan, PlanEntry

DEFAULT_BUDGET = 1024**3
HOLD_BYTES = 96 * 1024**2
"""A tensor whose merge takes several passes over its rows is read once and held when its
inputs total at most this many bytes (as stored), instead of being read again for each pass."""
YOUNG_COLLECTION = 50_000
"""Net container allocations between two collections of the youngest generation while a
merge runs (Python's default is 700)."""
CHUNK_ELEMENTS = {"cpu": 1 << 18, "cuda": 1 << 24}
"""Values per input per chunk: small enough on CPU that a chunk's temporaries stay in cache,
large enough on CUDA that a chunk fills the GPU."""
_DEVICE = re.compile(r"^(cpu|cuda)(:\d+)?$")


class Sink(Protocol):
    """Where merged tensors go. A sink may also offer ``rows_in_place(name, start, stop,
    dtype, device)``: rows of its own tensor that a merge may write directly, or None
    (:class:`~alloykit.checkpoint.resident.TensorSink`)."""

    def write_rows(self, name: str, first_row: int, rows: Any) -> None:
        """Store ``rows`` (a torch tensor); their memory is reused once this returns."""
        ...

    def write_bytes(self, name: str, first_row: int, data: Any, rows: int) -> None:
        """Store ``rows`` rows given as their raw bytes (the raw path's output)."""
        ...

    def finish(self, name: str) -> None: ...


@dataclass
class EngineOptions:
    device: str = "cpu"
    threads: int = 2
    tune_process: bool = True
    """Whether the merge may tune process-wide state while it runs, restoring it after: the
    garbage collector (:func:`_objects_frozen`) and torch's intra-op threads (one, so results
    never depend on their count). False leaves both as they are, for callers sharing the
    process with other work (:class:`alloykit.Merger`): a merge then runs with the caller's
    torch threads."""
    budget_bytes: int = DEFAULT_BUDGET
    budget_available: int | None = None
    """The available memory ``budget_bytes`` was derived from when it is the default
    (:mod:`alloykit.engine.budget`); None when the caller set it."""
    chunk_elements: int | None = None  # None: CHUNK_ELEMENTS of the device type
    raw_path: bool = True  # False: every tensor takes the torch path (for comparisons)

    def chunk_size(self) -> int:
        if self.chunk_elements is not None:
            return max(1, self.chunk_elements)
        return CHUNK_ELEMENTS["cuda" if self.device.startswith("cuda") else "cpu"]


def check_device(name: str) -> None:
    """Refuse a ``--device`` that cannot run (an AlloyError); CUDA devices are looked up with
    torch, the CPU needs no import."""
    if _DEVICE.match(name) is None:
        raise AlloyError(f"--device: unknown device {name!r}", "use cpu or cuda[:N]")
    if name.startswith("cuda"):
        from alloykit.engine.tensors import resolve_device

        resolve_device(name)


class _Budget:
    """Blocks admission of new work while too many bytes are in flight."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.cond = threading.Condition()

    def acquire(self, amount: int) -> int:
        amount = min(amount, self.limit)  # one oversize tensor may still run alone
        with self.cond:
            while self.used and self.used + amount > self.limit:
                self.cond.wait()
            self.used += amount
        return amount

    def release(self, amount: int) -> None:
        if not amount:  # nothing reserved (one thread): no one to wake
            return
        with self.cond:
            self.used -= amount
            self.cond.notify_all()


def _raw_merges(
    plan: Plan, entries: list[PlanEntry], options: EngineOptions
) -> dict[str, StoredMerge]:
    """The raw path's merge of each entry it runs (:func:`alloykit.engine.raw.merge_for`)."""
    if not (options.raw_path and options.device == "cpu" and native.available()):
        return {}
    if plan.compute_dtype != F32:
        return {}
    from alloykit.engine import raw

    merges = {e.name: raw.merge_for(plan, e) for e in entries}
    return {name: merging for name, merging in merges.items() if merging is not None}


@contextmanager
def _objects_frozen() -> Iterator[None]:
    """Keep Python's cyclic garbage collector off the objects that exist before a merge, and
    run it less often.

    A merge allocates a few small objects per chunk, which triggers collections, and each one
    that reaches the oldest generation walks every object torch created at import (seen as
    about 3% of a task-arithmetic merge's CPU time); even young collections were 3-5% of a
    DARE merge's. Objects made during the merge are still collected, every
    ``YOUNG_COLLECTION`` net allocations instead of 700.
    """
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(max(thresholds[0], YOUNG_COLLECTION), *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def execute(
    plan: Plan,
    sink: Sink,
    options: EngineOptions | None = None,
    *,
    skip: Iterable[str] = (),
    on_done: Callable[[PlanEntry], None] | None = None,
    staging: Staging | None = None,
) -> None:
    """Compute every plan entry not in ``skip`` and hand it to ``sink``.

    Entries start largest first, so that no big tensor is left to run alone at the end.
    ``staging`` is the torch path's :class:`~alloykit.engine.tensors.Staging` (its buffers
    and what it derived per tensor), kept by a caller that executes plans over the same
    inputs again (:class:`alloykit.Merger`); each execution makes its own by default.
    """
    options = options or EngineOptions()
    check_device(options.device)
    chunk_elements = options.chunk_size()
    skipped = set(skip)
    budget = _Budget(options.budget_bytes)
    threads = max(1, options.threads)
    order = execution_order(e for e in plan.entries if e.name not in skipped)
    by_raw = _raw_merges(plan, order, options)
    merge = None
    if len(by_raw) < len(order):
        merge = _torch_path(plan, options, chunk_elements, staging)
    with ExitStack() as stack:
        if by_raw:
            from alloykit.engine import raw

            files, buffers = raw.Descriptors(), raw.Buffers()
            stack.callback(files.close)
        if merge is not None and options.tune_process:
            from alloykit.engine.tensors import single_intra_op_thread

            stack.enter_context(single_intra_op_thread())

        def run(entry: PlanEntry, reserved: int) -> None:
            try:
                merging = by_raw.pop(entry.name, None)  # its state (survivor bits) goes with it
                if merging is not None:
                    raw.merge_entry(
                        plan, entry, merging, sink, chunk_elements=chunk_elements,
                        hold_bytes=HOLD_BYTES, files=files, buffers=buffers,
                    )  # fmt: skip
                else:
                    assert merge is not None
                    merge(entry, sink)
                if on_done is not None:
                    on_done(entry)
            finally:
                budget.release(reserved)

        if options.tune_process:
            stack.enter_context(_objects_frozen())
        _run_in_order(order, run, plan, chunk_elements, budget, threads)


def execution_order(entries: Iterable[PlanEntry]) -> list[PlanEntry]:
    """The order the engine starts entries in: largest output first."""
    return sorted(entries, key=lambda e: e.nbytes, reverse=True)


def _torch_path(
    plan: Plan, options: EngineOptions, chunk_elements: int, staging: Staging | None
) -> Callable[[PlanEntry, Sink], None]:
    """``merge(entry, sink)`` by the torch path (importing torch)."""
    with collector_paused():
        from alloykit.engine import tensors

    device = tensors.resolve_device(options.device)
    staging = staging or tensors.Staging()

    def merge(entry: PlanEntry, sink: Sink) -> None:
        tensors.merge_entry(plan, entry, sink, device, chunk_elements, staging)

    return merge


def _run_in_order(
    order: list[PlanEntry],
    run: Callable[[PlanEntry, int], None],
    plan: Plan,
    chunk_elements: int,
    budget: _Budget,
    threads: int,
) -> None:
    """Start ``run(entry, reserved bytes)`` for each entry in order on a pool of ``threads``,
    within the byte ``budget``; stop starting entries at the first failure and raise it.
    With one thread, the entries run in the calling thread: a hand-off to a worker costs a
    wake-up per entry, which on a busy machine can take longer than a small tensor's merge."""
    if threads == 1:  # one entry in flight at a time: the budget never holds one back
        for entry in order:
            run(entry, 0)
        return
    pending: set[Future[None]] = set()
    position: dict[Future[None], int] = {}
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="alloykit") as pool:
        try:
            for index, entry in enumerate(order):
                reserved = budget.acquire(plan.working_bytes(entry, chunk_elements))
                future = pool.submit(run, entry, reserved)
                position[future] = index
                pending.add(future)
                if any(f.done() and f.exception() is not None for f in pending):
                    break
                pending -= {f for f in pending if f.done()}
            wait(pending, return_when=FIRST_EXCEPTION)
        finally:
            for future in pending:
                future.cancel()
        _raise_first_failure(position)


def _raise_first_failure(position: dict[Future[None], int]) -> None:
    """Raise the error of the failed entry that comes first in the execution order.

    Entries run in parallel, so the first to fail in time depends on scheduling; every entry
    before a failed one has started (the pool runs them in order), so once the running ones
    have finished, the first failure in order is the same from run to run.
    """
    wait([f for f in position if not f.cancelled()])
    failed = [f for f in position if not f.cancelled() and f.exception() is not None]
    if failed:
        raise min(failed, key=position.__getitem__).exception()
