"""ModelSource: a checkpoint on disk, opened by headers only.

A reference is a local directory (single or sharded safetensors, or ``.bin`` pickles that are
only opened with ``allow_pickle`` and always with ``weights_only``), a single weights file, or
an ``org/name`` id already in the local Hugging Face cache. No network access is attempted.
"""

from __future__ import annotations

import json
import os
import pickle
import warnings
import zipfile
from dataclasses import dataclass, field
from math import prod
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alloykit.checkpoint.safetensors_format import TensorEntry, read_header, read_rows, read_tensor
from alloykit.dtypes import DType, of_torch
from alloykit.errors import CheckpointError

if TYPE_CHECKING:
    import torch

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


@dataclass(frozen=True)
class TensorMeta:
    """Shape and dtype of an input tensor, known without reading it."""

    name: str
    dtype: DType
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return prod(self.shape)


@dataclass
class ModelSource:
    """An opened checkpoint: tensor headers, config, and where the files are."""

    reference: str
    root: Path  # directory holding config/tokenizer files
    files: list[Path]
    config: dict[str, Any]
    tensors: dict[str, TensorMeta]
    _entries: dict[str, TensorEntry] = field(default_factory=dict, repr=False)
    _pickled: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    def entry(self, name: str) -> TensorEntry | None:
        """Where tensor ``name`` is stored as it is to be merged: its place in a safetensors
        file, to read with :func:`~alloykit.checkpoint.safetensors_format.read_into` (no
        torch needed). None for tensors that must be computed whole by :meth:`read`
        (pickles, derived tensors, adapters applied on read)."""
        return self._entries.get(name)

    def read(self, name: str) -> torch.Tensor:
        """The tensor ``name`` as stored (original dtype, on CPU)."""
        entry = self._entries.get(name)
        if entry is not None:
            return read_tensor(entry)
        return self._pickled[name]

    def reads_rows(self, name: str) -> bool:
        """Whether :meth:`read_rows` reads only the rows asked for (else it reads it all)."""
        return self.entry(name) is not None

    def read_rows(
        self, name: str, start: int, stop: int, into: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Rows ``[start, stop)`` of tensor ``name`` (see :func:`read_rows`)."""
        entry = self.entry(name)
        if entry is not None:
            return read_rows(entry, start, stop, into)
        whole = self.read(name)
        return whole[start:stop] if whole.dim() else whole

    def nbytes(self, name: str) -> int:
        meta = self.tensors[name]
        return meta.numel * meta.dtype.itemsize

    def checked_finite(self, name: str) -> bool:
        """Whether tensor ``name`` (as :meth:`read` gives it) was checked free of NaN and
        infinity once and for all, so the engine need not check it as it merges: tensors
        kept in memory by :class:`~alloykit.checkpoint.resident.ResidentSource`; no others."""
        return False

    def stacked(self, name: str) -> tuple[torch.Tensor, int] | None:
        """The stack ``[inputs, *shape]`` of one output tensor's inputs that holds tensor
        ``name`` at the returned slot, where the source keeps its tensors so
        (:class:`~alloykit.checkpoint.resident.ResidentSource`): the engine's chunks then
        view the stack instead of copying rows. None for tensors read from files."""
        return None


def open_source(
    reference: str, *, search_dirs: tuple[Path, ...] = (), allow_pickle: bool = False
) -> ModelSource:
    """Open ``reference`` by headers only; raise CheckpointError with a hint when it cannot.

    ``model+adapter`` opens the model with a LoRA adapter applied on read
    (see :mod:`alloykit.lora.source`).
    """
    if "+" in reference:
        from alloykit.lora.source import open_adapted  # the one way up: adapters live in lora/

        return open_adapted(reference, search_dirs=search_dirs, allow_pickle=allow_pickle)
    location = locate(reference, search_dirs)
    if location.is_file():
        root, files = location.parent, [location]
        if location.suffix not in WEIGHT_SUFFIXES:
            raise CheckpointError(
                f"model {reference!r}: {location} is not a weights file",
                "name a model directory, a .safetensors file, or (with --allow-pickle) a .bin",
            )
    else:
        root, files = location, weight_files(location, reference)
    config = read_config(root)
    source = ModelSource(reference, root, files, config, {})
    for path in files:
        if path.suffix == ".safetensors":
            entries, _ = read_header(path)
            for name, entry in entries.items():
                _add(source, reference, name, path)
                source._entries[name] = entry
                source.tensors[name] = TensorMeta(name, entry.dtype, entry.shape)
        else:
            for name, tensor in load_pickle(path, allow_pickle).items():
                _add(source, reference, name, path)
                source._pickled[name] = tensor
                dtype = _dtype(path, name, tensor)
                source.tensors[name] = TensorMeta(name, dtype, tuple(tensor.shape))
    if not source.tensors:
        raise CheckpointError(f"model {reference!r}: {location} holds no tensors")
    return source


def _add(source: ModelSource, reference: str, name: str, path: Path) -> None:
    if name in source.tensors:
        raise CheckpointError(
            f"model {reference!r}: tensor {name!r} appears in two files (second: {path.name})",
            "remove stray weight files from the model directory",
        )


def _dtype(path: Path, name: str, tensor: torch.Tensor) -> DType:
    try:
        return of_torch(tensor.dtype)
    except TypeError:
        raise CheckpointError(
            f"{path}: tensor {name!r} is {tensor.dtype}, which a merge cannot write",
            "convert the checkpoint's tensors to a real dtype first",
        ) from None


def locate(reference: str, search_dirs: tuple[Path, ...]) -> Path:
    """Resolve a reference to an existing path: as given, relative to search dirs, or HF cache."""
    given = Path(reference).expanduser()
    candidates = [given] if given.is_absolute() else [given, *(d / given for d in search_dirs)]
    for candidate in candidates:
        if candidate.exists():
            return candidate.resolve()
    cached = hf_cache_snapshot(reference)
    if cached is not None:
        return cached
    raise CheckpointError(
        f"model {reference!r} not found: no such path, and not in the local Hugging Face cache",
        "check the path, or download the model first (alloykit never downloads by itself)",
    )


def hf_cache_snapshot(reference: str) -> Path | None:
    """The cached snapshot directory of hub id ``reference``, looked up offline."""
    parts = reference.split("/")
    if len(parts) != 2 or not all(parts) or reference.startswith((".", "~")):
        return None
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError
    except ImportError:
        return None
    try:
        cache_dir = os.environ.get("HF_HUB_CACHE") or (
            str(Path(os.environ["HF_HOME"]) / "hub") if os.environ.get("HF_HOME") else None
        )
        return Path(snapshot_download(reference, local_files_only=True, cache_dir=cache_dir))
    except (LocalEntryNotFoundError, HFValidationError, OSError, ValueError):
        return None


def weight_files(directory: Path, reference: str) -> list[Path]:
    """The weight files of a model directory, preferring safetensors, honouring shard indexes."""
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = directory / index_name
        if index.exists():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (ValueError, KeyError, TypeError) as exc:
                raise CheckpointError(
                    f"{index}: unreadable shard index ({exc})", "fix or delete the index file"
                ) from exc
            files = sorted({directory / shard for shard in weight_map.values()})
            missing = [f.name for f in files if not f.exists()]
            if missing:
                raise CheckpointError(
                    f"model {reference!r}: shard {missing[0]} listed in {index_name} is missing",
                    "the download is incomplete",
                )
            return files
    safetensors = sorted(directory.glob("*.safetensors"))
    if safetensors:
        return safetensors
    pickles = sorted(p for p in directory.iterdir() if p.suffix in (".bin", ".pt", ".pth"))
    if pickles:
        return pickles
    raise CheckpointError(
        f"model {reference!r}: no weights in {directory}",
        "expected model.safetensors, sharded *.safetensors with an index, or pytorch_model.bin",
    )


def read_config(root: Path) -> dict[str, Any]:
    path = root / "config.json"
    if not path.exists():
        return {}
    try:
        config = json.loads(path.read_text())
    except ValueError as exc:
        raise CheckpointError(
            f"{path}: invalid JSON ({exc})", "fix or restore config.json"
        ) from exc
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return config


def load_pickle(path: Path, allow_pickle: bool) -> dict[str, torch.Tensor]:
    """Load a pickle checkpoint with ``weights_only=True``, and only when the user allows it."""
    if not allow_pickle:
        raise CheckpointError(
            f"{path}: is a pickle checkpoint, which can run code when loaded",
            "convert it to safetensors, or pass --allow-pickle to load it with weights_only=True",
        )
    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols are not for users
            state = torch.load(
                path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path)
            )
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError) as exc:
        raise CheckpointError(
            f"{path}: refused to load: not a plain tensor pickle ({_refusal_reason(exc)})",
            "the file may be malicious or corrupt; do not use it",
        ) from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: does not hold a flat dictionary of tensors")
    return state


def _refusal_reason(exc: BaseException) -> str:
    """The line of torch's long weights_only message that says what was refused."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    telling = [line for line in lines if "GLOBAL" in line or "Unsupported" in line]
    reason = (telling or lines or [type(exc).__name__])[0]
    return reason.removeprefix("WeightsUnpickler error: ")[:160]
