"""Statistics files: per-model auxiliary tensors (Gram matrices, Fisher diagonals) that some
merge methods take beside the weights.

One safetensors file per model, written by ``alloykit calibrate``: float32 tensors keyed
``"{statistic}:{tensor name}"``, with header metadata ``alloykit.statistics = "1"`` and
``alloykit.model_fingerprint``, the fingerprint of the checkpoint the statistics were
computed on (:mod:`alloykit.checkpoint.fingerprint`). A file is opened by its header only and
refused when it describes another model; tensors are read when an entry is merged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from alloykit.checkpoint.fingerprint import fingerprint
from alloykit.checkpoint.safetensors_format import TensorEntry, read_header, read_rows, read_tensor
from alloykit.checkpoint.source import ModelSource
from alloykit.dtypes import F32
from alloykit.errors import CheckpointError

if TYPE_CHECKING:
    import torch

FORMAT_VERSION = "1"
_HINT_RECOMPUTE = "compute this model's statistics with `alloykit calibrate`"


def statistic_key(statistic: str, tensor: str) -> str:
    """The key of ``statistic`` of ``tensor`` in a statistics file."""
    return f"{statistic}:{tensor}"


@dataclass
class StatisticsFile:
    """One model's statistics file, opened by its header."""

    model: str
    path: Path
    entries: dict[str, TensorEntry]
    metadata: dict[str, str]

    def kinds(self) -> set[str]:
        """The statistics the file holds (``gram``, ``fisher``, ...)."""
        return {key.split(":", 1)[0] for key in self.entries}

    def read(self, key: str, into: torch.Tensor | None = None) -> torch.Tensor:
        """The statistic ``key`` (float32, on CPU), read into ``into`` (a contiguous CPU
        tensor of its size) when given."""
        entry = self.entries[key]
        if into is None:
            return read_tensor(entry)
        import torch

        rows = entry.shape[0] if entry.shape else 1
        return read_rows(entry, 0, rows, into.view(-1).view(torch.uint8))


def open_statistics(path: Path, source: ModelSource, where: str) -> StatisticsFile:
    """Open the statistics file ``path`` of the model ``source``; ``where`` is the recipe key
    that names it. Raise CheckpointError when the file is absent, not a statistics file, holds
    anything but float32 tensors, or was computed on other weights than ``source``'s."""
    if not path.is_file():
        raise CheckpointError(
            f"{where}: statistics file {path} does not exist", _HINT_RECOMPUTE + " first"
        )
    entries, metadata = read_header(path)
    if metadata.get("alloykit.statistics") != FORMAT_VERSION:
        raise CheckpointError(
            f"{where}: {path} is not an alloykit statistics file (its metadata has no "
            f"alloykit.statistics = {FORMAT_VERSION!r})",
            _HINT_RECOMPUTE,
        )
    for key, entry in entries.items():
        if ":" not in key or entry.dtype != F32:
            raise CheckpointError(
                f"{where}: {path}: tensor {key!r} is not a float32 statistic "
                f"named STATISTIC:TENSOR (dtype {entry.dtype})",
                _HINT_RECOMPUTE,
            )
    recorded = metadata.get("alloykit.model_fingerprint")
    if recorded != fingerprint(source):
        raise CheckpointError(
            f"{where}: statistics file {path} was computed on other weights than model "
            f"{source.reference!r} ({source.root}): the model fingerprints differ",
            _HINT_RECOMPUTE + ", or name the file computed on this model",
        )
    return StatisticsFile(source.reference, path, entries, metadata)
