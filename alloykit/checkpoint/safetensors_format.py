"""The safetensors file layout: header parsing and positional tensor reads.

We read headers ourselves (8-byte length + JSON) so a plan can be made from headers alone, and
read tensor bytes with positional reads into fresh buffers: nothing is memory-mapped, so
pages of consumed inputs never accumulate in the process's resident set. Bytes are read into
any writable buffer (:func:`read_into`), so reading needs no torch; :func:`read_rows` wraps
them in a torch tensor.
"""

from __future__ import annotations

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
        header = json.loads(raw.decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
    except (UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(
            f"{path}: corrupt safetensors header ({exc})",
            "the file is truncated or corrupt; re-download it",
        ) from exc
    data_start = 8 + header_len
    metadata = header.pop("__metadata__", None) or {}
    entries: dict[str, TensorEntry] = {}
    for name, info in header.items():
        entries[name] = _entry(path, name, info, data_start, size)
    return entries, metadata


def _entry(path: Path, name: str, info: object, data_start: int, size: int) -> TensorEntry:
    def bad(why: str) -> CheckpointError:
        return CheckpointError(
            f"{path}: corrupt safetensors header at tensor {name!r}: {why}",
            "the file is truncated or corrupt; re-download it",
        )

    if not isinstance(info, dict):
        raise bad("entry is not an object")
    dtype = BY_CODE.get(str(info.get("dtype")))
    if dtype is None:
        raise bad(f"unsupported dtype {info.get('dtype')!r}")
    shape = info.get("shape")
    offsets = info.get("data_offsets")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise bad(f"invalid shape {shape!r}")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) for o in offsets)
    ):
        raise bad(f"invalid data_offsets {offsets!r}")
    begin, end = offsets
    if end < begin or end - begin != prod(shape) * dtype.itemsize:
        raise bad(f"data_offsets {offsets} do not match shape {shape} and dtype {info['dtype']}")
    if data_start + end > size:
        raise bad(f"data runs past the end of the file ({data_start + end} > {size} bytes)")
    return TensorEntry(name, path, dtype, tuple(shape), data_start + begin, data_start + end)


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
