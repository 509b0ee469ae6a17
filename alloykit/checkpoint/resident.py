"""Inputs and outputs held in memory: the source and the sink of :class:`alloykit.Merger`.

A :class:`ResidentSource` stands for an opened checkpoint whose tensors were read once and kept
(in RAM or on a GPU, in the compute dtype), so that merging again reads no file. It keeps the
checkpoint's headers (stored dtypes included), so a plan made from it is the plan made from
the files. A :class:`TensorSink` writes merged rows into tensors the caller owns: the
parameters of a live model, or tensors allocated once and reused.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from alloykit.checkpoint.source import ModelSource

if TYPE_CHECKING:
    import torch
    from typing_extensions import Buffer


class ResidentSource(ModelSource):
    """``source``'s tensors ``names``, read once and kept on ``device`` in ``dtype``.

    Only floating-point tensors are converted; others (integer buffers) keep their dtype.
    Tensors that are not kept cannot be read: the plan made at load time names every input.
    """

    def __init__(
        self,
        source: ModelSource,
        names: Iterable[str],
        *,
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        super().__init__(
            source.reference, source.root, list(source.files), source.config, source.tensors
        )
        self.kept: dict[str, torch.Tensor] = {}
        for name in names:
            stored = source.read(name)
            target = dtype if stored.is_floating_point() else stored.dtype
            # a tensor read from a file is a fresh buffer, kept as it is when it fits; others
            # (pickles, derived tensors) may be shared with their source, so they are copied
            fresh = source.entry(name) is not None
            self.kept[name] = stored.to(device=device, dtype=target, copy=not fresh)

    def read(self, name: str) -> torch.Tensor:
        return self.kept[name]

    def entry(self, name: str) -> None:
        """No tensor is in a file any more: the engine takes its torch path for all of them."""
        return None

    def reads_rows(self, name: str) -> bool:
        return False

    @property
    def resident_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.kept.values())


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
