"""Inputs and outputs held in memory: the source and the sink of :class:`alloykit.Merger`.

A :class:`ResidentSource` stands for an opened checkpoint whose tensors were read once and kept
(in RAM or on a GPU, in the compute dtype, checked finite; stacked by output tensor where
they can be, :func:`load_resident`), so that merging again reads and checks nothing. It keeps the
checkpoint's headers (stored dtypes included), so a plan made from it is the plan made from
the files. A :class:`TensorSink` writes merged rows into tensors the caller owns: the
parameters of a live model, or tensors allocated once and reused.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from alloykit.checkpoint.source import ModelSource
from alloykit.errors import NonFiniteError

if TYPE_CHECKING:
    import torch
    from typing_extensions import Buffer


class ResidentSource(ModelSource):
    """An opened checkpoint whose used tensors are kept in memory (:func:`load_resident`).

    Only floating-point tensors are in the compute dtype; others (integer buffers) keep their
    dtype. Tensors that are not kept cannot be read: the plan made at load time names every
    input.
    """

    def __init__(self, source: ModelSource) -> None:
        super().__init__(
            source.reference, source.root, list(source.files), source.config, source.tensors
        )
        self.kept: dict[str, torch.Tensor] = {}
        self.stacks: dict[str, tuple[torch.Tensor, int]] = {}

    def read(self, name: str) -> torch.Tensor:
        return self.kept[name]

    def entry(self, name: str) -> None:
        """No tensor is in a file any more: the engine takes its torch path for all of them."""
        return None

    def reads_rows(self, name: str) -> bool:
        return False

    def checked_finite(self, name: str) -> bool:
        """Every kept tensor was checked when it was loaded (:func:`load_resident`)."""
        return True

    def stacked(self, name: str) -> tuple[torch.Tensor, int] | None:
        return self.stacks.get(name)

    @property
    def resident_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.kept.values())


def load_resident(
    sources: dict[str, ModelSource],
    groups: Iterable[Sequence[tuple[str, str]]],
    *,
    device: torch.device,
    dtype: torch.dtype,
) -> dict[str, ResidentSource]:
    """Read every tensor of ``groups`` once onto ``device`` (floating tensors in ``dtype``) and
    keep it: each group is one output tensor's inputs as ``(model reference, tensor name)``
    in the engine's order (models, then the base).

    A group of floating tensors of one shape (with at least one dimension), none of them in
    an earlier group, is read into one stack ``[inputs, *shape]``, whose slots the sources
    keep as views (:meth:`ResidentSource.stacked`): the engine's chunks then view the stack,
    and no memory is added. Other tensors are kept alone, once each. Every floating tensor is
    checked free of NaN and infinity as it is loaded (a :class:`NonFiniteError` naming it):
    the inputs never change, so merges need not check them again.
    """
    import torch

    resident = {ref: ResidentSource(source) for ref, source in sources.items()}
    for group in groups:
        metas = [sources[model].tensors[name] for model, name in group]
        fresh = len(set(group)) == len(group) and all(
            name not in resident[model].kept for model, name in group
        )
        stackable = (
            fresh
            and all(m.dtype.is_floating_point and m.shape == metas[0].shape for m in metas)
            and len(metas[0].shape) >= 1
        )
        if stackable:
            stack = torch.empty((len(group), *metas[0].shape), dtype=dtype, device=device)
            for slot, (model, name) in enumerate(group):
                _load(sources[model], name, stack[slot])
                resident[model].kept[name] = stack[slot]
                resident[model].stacks[name] = (stack, slot)
            continue
        for model, name in group:
            if name not in resident[model].kept:
                resident[model].kept[name] = _load(sources[model], name, device=device, dtype=dtype)
    return resident


def _load(
    source: ModelSource,
    name: str,
    into: torch.Tensor | None = None,
    *,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """``source``'s tensor ``name`` read ``into`` a tensor, or converted to ``dtype`` (if
    floating) on ``device``; floating values checked finite."""
    import torch

    if into is not None:
        stored_as = source.tensors[name].dtype.torch
        if source.entry(name) is not None and stored_as == into.dtype and into.device.type == "cpu":
            # the file's bytes straight into the stack, as the engine reads held inputs
            kept = into
            source.read_rows(name, 0, into.shape[0], into.view(-1).view(torch.uint8))
        else:
            kept = into.copy_(source.read(name))
    else:
        assert device is not None and dtype is not None
        stored = source.read(name)
        target = dtype if stored.is_floating_point() else stored.dtype
        # a tensor read from a file is a fresh buffer, kept as it is when it fits; others
        # (pickles, derived tensors) may be shared with their source, so they are copied
        fresh = source.entry(name) is not None
        kept = stored.to(device=device, dtype=target, copy=not fresh)
    # a sum is NaN or infinite whenever a value is (one pass, no temporary); only then, or
    # when a finite sum overflows, are the values checked one by one
    if kept.is_floating_point() and not (
        math.isfinite(kept.sum().item()) or bool(kept.isfinite().all())
    ):
        raise NonFiniteError.in_input(source.reference, name, bool(kept.isnan().any()))
    return kept


class TensorSink:
    """Writes each merged tensor into the caller's tensor of the same name, in place.

    Rows are cast to the target's dtype and moved to its device as they are copied.
    """

    def __init__(self, targets: dict[str, torch.Tensor]) -> None:
        self.targets = {name: tensor.detach() for name, tensor in targets.items()}

    def write_rows(self, name: str, first_row: int, rows: torch.Tensor) -> None:
        target = self.targets[name]
        if target.dim():
            target[first_row : first_row + rows.shape[0]].copy_(rows)
        else:
            target.copy_(rows.reshape(()))

    def rows_in_place(
        self, name: str, start: int, stop: int, dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor | None:
        """Rows ``[start, stop)`` of the target, for a merge to write in place (nothing is
        then copied), when the target holds them contiguously in ``dtype`` on ``device``."""
        target = self.targets[name]
        if target.dtype != dtype or target.device != device or not target.dim():
            return None
        rows = target if start == 0 and stop == target.shape[0] else target[start:stop]
        return rows if rows.is_contiguous() else None

    def write_bytes(self, name: str, first_row: int, data: Buffer, rows: int) -> None:
        """Rows given as raw bytes in the target's dtype (the torch-free lane's output)."""
        import torch

        target = self.targets[name]
        flat = torch.frombuffer(bytearray(memoryview(data).cast("B")), dtype=target.dtype)
        self.write_rows(name, first_row, flat.view(rows, *target.shape[1:]))

    def finish(self, name: str) -> None:
        """Nothing to do: the rows are in place."""

    def write(self, name: str, tensor: torch.Tensor) -> None:
        self.write_rows(name, 0, tensor)


def storage_key(tensor: torch.Tensor) -> tuple[Any, ...]:
    """What identifies the memory a tensor views: tensors with equal keys are one (tied)."""
    return (
        tensor.device,
        tensor.untyped_storage().data_ptr(),
        tensor.storage_offset(),
        tuple(tensor.shape),
        tuple(tensor.stride()),
    )
