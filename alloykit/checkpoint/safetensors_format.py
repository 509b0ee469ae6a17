"""The safetensors file layout: header parsing and positional tensor reads.

We read headers ourselves (8-byte length + JSON) so a plan can be made from headers alone, and
read tensor bytes with positional reads into fresh buffers: nothing is memory-mapped, so
pages of consumed inputs never accumulate in the process's resident set. Bytes are read into
any writable buffer (:func:`read_into`), so reading needs no torch; :func:`read_rows` wraps
them in a torch tensor.
"""

from __future__ import annotations

import itertools
import json
import os
import struct
from dataclasses import dataclass
from math import prod
from pathlib import Path
from typing import TYPE_CHECKING

from alloykit.dtypes import BY_CODE, DType
from alloykit.errors import CheckpointError

if TYPE_CHECKING:
    import torch
    from typing_extensions import Buffer

MAX_HEADER_BYTES = 100 * 1024 * 1024


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lives: file, dtype, shape and absolute byte span."""

    name: str
    path: Path
    dtype: DType
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start

    @property
    def numel(self) -> int:
        return prod(self.shape)

    @property
    def row_bytes(self) -> int:
        """Bytes per row along dimension 0 (a 0-dimensional tensor is one row)."""
        return self.dtype.itemsize * prod(self.shape[1:])


def read_header(path: Path) -> tuple[dict[str, TensorEntry], dict[str, str]]:
    """Parse and validate a safetensors header; return its tensors and metadata."""
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise CheckpointError(
                    f"{path}: not a safetensors file (only {len(prefix)} bytes)",
                    "the file is truncated or corrupt; re-download it",
                )
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len > MAX_HEADER_BYTES or 8 + header_len > size:
                raise CheckpointError(
                    f"{path}: corrupt safetensors header (declares {header_len} header bytes, "
                    f"file has {size})",
                    "the file is truncated or corrupt; re-download it",
                )
            raw = handle.read(header_len)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror})") from exc
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_keys)
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        why = "nested too deeply" if isinstance(exc, RecursionError) else _one_line(exc)
        raise CheckpointError(
            f"{path}: corrupt safetensors header ({why})",
            "the file is truncated or corrupt; re-download it",
        ) from exc
    data_start = 8 + header_len
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError(
            f"{path}: corrupt safetensors header (__metadata__ is not a map of strings)",
            "the file is truncated or corrupt; re-download it",
        )
    entries: dict[str, TensorEntry] = {}
    for name, info in header.items():
        entries[name] = _entry(path, name, info, data_start, size)
    _check_disjoint(path, entries)
    return entries, metadata


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """A JSON object whose keys are all different (``json`` would keep the last silently: two
    entries for one tensor name)."""
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        twice = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise ValueError(f"{twice!r} appears twice")
    return result


def _one_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _check_disjoint(path: Path, entries: dict[str, TensorEntry]) -> None:
    """Refuse tensors whose bytes overlap (one write would change another tensor)."""
    spans = sorted((e.start, e.end, e.name) for e in entries.values() if e.end > e.start)
    for (_, end, name), (start, _, other) in itertools.pairwise(spans):
        if start < end:
            raise CheckpointError(
                f"{path}: corrupt safetensors header: the bytes of tensors {name!r} and "
                f"{other!r} overlap",
                "the file is truncated or corrupt; re-download it",
            )


def _entry(path: Path, name: str, info: object, data_start: int, size: int) -> TensorEntry:
    def bad(why: str) -> CheckpointError:
        return CheckpointError(
            f"{path}: corrupt safetensors header at tensor {_short(name)}: {why}",
            "the file is truncated or corrupt; re-download it",
        )

    if not isinstance(info, dict):
        raise bad("entry is not an object")
    dtype = BY_CODE.get(str(info.get("dtype")))
    if dtype is None:
        raise bad(f"unsupported dtype {_short(info.get('dtype'))}")
    shape = info.get("shape")
    offsets = info.get("data_offsets")
    if not isinstance(shape, list) or not all(_natural(d) for d in shape):
        raise bad(f"invalid shape {_short(shape)}")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(map(_natural, offsets)):
        raise bad(f"invalid data_offsets {_short(offsets)}")
    begin, end = offsets
    if end < begin or end - begin != prod(shape) * dtype.itemsize:
        raise bad(
            f"data_offsets {_short(offsets)} do not match shape {_short(shape)} and dtype {dtype}"
        )
    if data_start + end > size:
        raise bad(f"data runs past the end of the file ({data_start + end} > {size} bytes)")
    return TensorEntry(name, path, dtype, tuple(shape), data_start + begin, data_start + end)


def _natural(value: object) -> bool:
    """A count or offset: an int (not a bool) >= 0."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _short(value: object) -> str:
    """``repr`` of a header value, cut to fit in a one-line message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def read_tensor(entry: TensorEntry) -> torch.Tensor:
    """Read one tensor's bytes with a positional read into a new buffer."""
    return read_rows(entry, 0, entry.shape[0] if entry.shape else 1)


def read_into(
    entry: TensorEntry, start: int, stop: int, buffer: Buffer, fd: int | None = None
) -> int:
    """Read rows ``[start, stop)`` (along dimension 0) of a tensor's bytes into the start of
    ``buffer``, by positional reads; return the byte count.

    ``buffer`` is anything writable and C-contiguous (a numpy array, a bytearray, a memoryview
    of pinned memory), so bytes reach their final place without torch and without a copy.
    ``fd``, a descriptor of ``entry.path`` the caller keeps open, saves an open and a close
    per read for callers that read a file chunk by chunk.
    """
    nbytes = (stop - start) * entry.row_bytes
    if not nbytes:
        return 0
    view = memoryview(buffer).cast("B")
    if len(view) < nbytes:
        raise ValueError(f"buffer of {len(view)} bytes for {nbytes} bytes of {entry.name!r}")
    first = entry.start + start * entry.row_bytes
    handle = os.open(entry.path, os.O_RDONLY) if fd is None else fd
    try:
        done = 0
        while done < nbytes:
            got = os.preadv(handle, [view[done:nbytes]], first + done)
            if got <= 0:
                raise CheckpointError(
                    f"{entry.path}: unexpected end of file reading tensor {entry.name!r}",
                    "the file is truncated; re-download it",
                )
            done += got
    finally:
        if fd is None:
            os.close(handle)
    return nbytes


def read_rows(
    entry: TensorEntry, start: int, stop: int, into: torch.Tensor | None = None
) -> torch.Tensor:
    """Rows ``[start, stop)`` of a tensor as a torch tensor, by :func:`read_into`.

    ``into`` is a reusable byte buffer (e.g. pinned memory) of at least the rows' size; without
    it a new buffer is allocated. The result is a view of that buffer in the tensor's dtype.
    """
    import torch

    nbytes = (stop - start) * entry.row_bytes
    buffer = torch.empty(nbytes, dtype=torch.uint8) if into is None else into[:nbytes]
    read_into(entry, start, stop, buffer.numpy())
    rows = buffer.view(entry.dtype.torch)
    return rows.reshape(()) if not entry.shape else rows.reshape(stop - start, *entry.shape[1:])
