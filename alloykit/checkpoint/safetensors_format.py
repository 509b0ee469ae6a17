"""The safetensors file layout: header parsing and positional tensor reads.

We read headers ourselves (8-byte length + JSON) so a plan can be made from headers alone, and
read tensor bytes with positional reads into fresh buffers: nothing is memory-mapped, so
pages of consumed inputs never accumulate in the process's resident set.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

from alloykit.errors import CheckpointError

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}
DTYPE_NAMES: dict[torch.dtype, str] = {v: k for k, v in DTYPES.items()}
MAX_HEADER_BYTES = 100 * 1024 * 1024


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lives: file, dtype, shape and absolute byte span."""

    name: str
    path: Path
    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


def dtype_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


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
    dtype = DTYPES.get(str(info.get("dtype")))
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
    numel = 1
    for d in shape:
        numel *= d
    if end < begin or end - begin != numel * dtype_size(dtype):
        raise bad(f"data_offsets {offsets} do not match shape {shape} and dtype {info['dtype']}")
    if data_start + end > size:
        raise bad(f"data runs past the end of the file ({data_start + end} > {size} bytes)")
    return TensorEntry(name, path, dtype, tuple(shape), data_start + begin, data_start + end)


def read_tensor(entry: TensorEntry) -> torch.Tensor:
    """Read one tensor's bytes with a positional read into a new buffer."""
    return read_rows(entry, 0, entry.shape[0] if entry.shape else 1)


def read_rows(
    entry: TensorEntry, start: int, stop: int, into: torch.Tensor | None = None
) -> torch.Tensor:
    """Rows ``[start, stop)`` (along dimension 0) of a tensor, by one positional read.

    ``into`` is a reusable byte buffer (e.g. pinned memory) of at least the rows' size; without
    it a new buffer is allocated. The result is a view of that buffer in the tensor's dtype.
    """
    shape = entry.shape
    rows = shape[0] if shape else 1
    row_bytes = entry.nbytes // rows if rows else 0
    nbytes = (stop - start) * row_bytes
    buffer = torch.empty(nbytes, dtype=torch.uint8) if into is None else into[:nbytes]
    if nbytes:
        view = memoryview(buffer.numpy())
        first = entry.start + start * row_bytes
        fd = os.open(entry.path, os.O_RDONLY)
        try:
            done = 0
            while done < nbytes:
                got = os.preadv(fd, [view[done:]], first + done)
                if got <= 0:
                    raise CheckpointError(
                        f"{entry.path}: unexpected end of file reading tensor {entry.name!r}",
                        "the file is truncated; re-download it",
                    )
                done += got
        finally:
            os.close(fd)
    if not shape:
        return buffer.view(entry.dtype).reshape(())
    return buffer.view(entry.dtype).reshape(stop - start, *shape[1:])
