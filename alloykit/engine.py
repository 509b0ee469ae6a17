"""Executes a Plan into a sink: read → compute (fp32, chosen device) → cast once → write.

Tensors are processed by a pool of worker threads (torch and file I/O release the GIL), so
reading, computing and writing of different tensors overlap. A byte budget bounds the memory
of tensors in flight; each tensor's result depends only on its inputs and its own seed, so
the output is the same for any thread count and order.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Protocol

import torch

from alloykit.errors import AlloyError, NonFiniteError, PlanError
from alloykit.methods import get_method
from alloykit.plan import Plan, PlanEntry, TensorRef

DEFAULT_BUDGET = 2 * 1024**3


class Sink(Protocol):
    def write(self, name: str, tensor: torch.Tensor) -> None: ...


@dataclass
class EngineOptions:
    device: str = "cpu"
    threads: int = 2
    budget_bytes: int = DEFAULT_BUDGET


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
        with self.cond:
            self.used -= amount
            self.cond.notify_all()


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


def compute_entry(plan: Plan, entry: PlanEntry, device: torch.device) -> torch.Tensor:
    """Make one output tensor on ``device``, returned on CPU in the output dtype."""
    read = _reader(plan)
    if entry.method == "passthrough" and not entry.dtype.is_floating_point:
        return read(entry.inputs[0])
    dtype = plan.compute_dtype
    rows = entry.common_rows
    shape = (rows, *entry.shape[1:]) if rows is not None else entry.shape
    stacked = torch.empty((len(entry.inputs), *shape), dtype=dtype, device=device)
    for slot, ref in zip(stacked, entry.inputs, strict=True):
        tensor = read(ref)
        slot.copy_(tensor[:rows] if rows is not None else tensor, non_blocking=True)
    full_base = None
    if entry.base is not None:
        full_base = read(entry.base).to(device=device, dtype=dtype)
    base = full_base[:rows] if (full_base is not None and rows is not None) else full_base
    if not _all_finite(stacked, full_base):
        raise _non_finite(plan, entry, read)
    method = get_method(entry.method)
    kwargs: dict[str, object] = dict(entry.globals)
    for name, values in entry.per_model.items():
        # float32 whatever the compute dtype: kernels recover the decimal the user wrote
        kwargs[name] = torch.tensor([float(v) for v in values], dtype=torch.float32, device=device)
    if method.random:
        kwargs["generator"] = torch.Generator().manual_seed(entry.seed)
    try:
        result = method.kernel(stacked, base, **kwargs)
    except ValueError as exc:  # kernels report inputs they cannot merge this way
        raise PlanError(
            f"tensor {entry.name!r}: method {entry.method!r} cannot merge it: {exc}",
            "adjust the method's parameters for this tensor (see `alloykit methods`)",
        ) from exc
    if rows is not None:
        lead = full_base if full_base is not None else read(entry.inputs[0]).to(device, dtype)
        merged, result = result, lead.clone()
        result[:rows] = merged
    if not _all_finite(result):
        raise _non_finite(plan, entry, read)
    return result.to(entry.dtype).cpu()


def _all_finite(*tensors: torch.Tensor | None) -> bool:
    """Inputs are checked before merging: a kernel may discard a NaN (trimming) and hide it.

    A sum is NaN or infinite whenever an element is, and costs no temporary the size of the
    tensor; only then is the exact element-wise check run (a finite sum can overflow).
    """
    return all(
        t is None or bool(torch.isfinite(t.sum())) or bool(torch.isfinite(t).all()) for t in tensors
    )


def _reader(plan: Plan) -> Callable[[TensorRef], torch.Tensor]:
    def read(ref: TensorRef) -> torch.Tensor:
        return plan.sources[ref.model].read(ref.name)

    return read


def _non_finite(
    plan: Plan, entry: PlanEntry, read: Callable[[TensorRef], torch.Tensor]
) -> AlloyError:
    for ref in [*entry.inputs, *([entry.base] if entry.base else [])]:
        tensor = read(ref)
        if tensor.dtype.is_floating_point and not bool(torch.isfinite(tensor).all()):
            kind = "NaN" if bool(torch.isnan(tensor).any()) else "infinite values"
            return NonFiniteError(
                f"tensor {ref.name!r} of model {ref.model!r} contains {kind}",
                "the checkpoint is corrupt or was saved after a diverged training run",
            )
    return NonFiniteError(
        f"merging {entry.name!r} with {entry.method!r} produced NaN or infinite values",
        "check the method's parameters (e.g. weights summing to zero with normalize)",
    )


def execute(
    plan: Plan,
    sink: Sink,
    options: EngineOptions | None = None,
    *,
    skip: Iterable[str] = (),
    on_done: Callable[[PlanEntry], None] | None = None,
) -> None:
    """Compute every plan entry not in ``skip`` and hand it to ``sink``."""
    options = options or EngineOptions()
    device = resolve_device(options.device)
    skipped = set(skip)
    budget = _Budget(options.budget_bytes)
    threads = max(1, options.threads)

    def run(entry: PlanEntry, reserved: int) -> None:
        try:
            sink.write(entry.name, compute_entry(plan, entry, device))
            if on_done is not None:
                on_done(entry)
        finally:
            budget.release(reserved)

    pending: set[Future[None]] = set()
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="alloykit") as pool:
        try:
            for entry in plan.entries:
                if entry.name in skipped:
                    continue
                reserved = budget.acquire(plan.working_bytes(entry))
                pending.add(pool.submit(run, entry, reserved))
                finished = {f for f in pending if f.done()}
                for future in finished:
                    future.result()
                pending -= finished
            done, _ = wait(pending, return_when=FIRST_EXCEPTION)
            for future in done:
                future.result()
            for future in pending:
                future.result()
        except BaseException:
            for future in pending:
                future.cancel()
            raise
