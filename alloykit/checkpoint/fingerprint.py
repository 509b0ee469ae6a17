"""A checkpoint's fingerprint: what ties a statistics file to the exact weights it describes.

SHA-256 over every tensor of the checkpoint as loaded, in sorted name order: for each one a
header line (JSON ``[name, dtype, shape]`` and a newline), then its bytes as stored. Tensors
in safetensors files are streamed in blocks by positional reads (never the whole model in
memory); others (pickles, adapters applied on read) are read one at a time.

Fingerprinting reads every byte of the model, so the result is cached per set of weight files
by (path, size, modification time): in memory for the process, and on disk under
``$ALLOYKIT_CACHE/fingerprints`` (default ``~/.cache/alloykit``) for later runs. Sources whose
tensors are computed on read are not cached (their files do not say all that shapes them).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

from alloykit.atomic_files import written_whole
from alloykit.checkpoint.safetensors_format import read_into
from alloykit.checkpoint.source import ModelSource

BLOCK_BYTES = 16 * 1024**2
"""Bytes read at a time while hashing a tensor stored in a safetensors file."""
_FORMAT = "alloykit-fingerprint-1"
_memory: dict[str, str] = {}
_lock = threading.Lock()


def fingerprint(source: ModelSource) -> str:
    """The SHA-256 fingerprint (hex) of ``source``'s tensors, from the cache when its files
    are unchanged."""
    key = _cache_key(source)
    if key is None:
        return _compute(source)
    with _lock:
        found = _memory.get(key)
    if found is None:
        found = _read_cached(key)
    if found is None:
        found = _compute(source)
        _write_cached(key, found)
    with _lock:
        _memory[key] = found
    return found


def _compute(source: ModelSource) -> str:
    digest = hashlib.sha256()
    block = bytearray()
    for name in sorted(source.tensors):
        meta = source.tensors[name]
        digest.update(json.dumps([name, meta.dtype.name, list(meta.shape)]).encode() + b"\n")
        entry = source.entry(name)
        if entry is None:
            digest.update(_tensor_bytes(source, name))
            continue
        rows = entry.shape[0] if entry.shape else 1
        step = max(1, BLOCK_BYTES // max(1, entry.row_bytes))
        if len(block) < min(rows, step) * entry.row_bytes:
            block = bytearray(min(rows, step) * entry.row_bytes)
        for start in range(0, rows, step):
            stop = min(rows, start + step)
            count = read_into(entry, start, stop, block)
            digest.update(memoryview(block)[:count])
    return digest.hexdigest()


def _tensor_bytes(source: ModelSource, name: str) -> bytes:
    """The bytes of a tensor that is read whole (a pickle, a tensor computed on read)."""
    import torch

    tensor = source.read(name).detach().contiguous().reshape(-1)
    return tensor.view(torch.uint8).numpy().tobytes()


def _cache_key(source: ModelSource) -> str | None:
    if any(source.entry(name) is None for name in source.tensors):
        return None
    parts = [_FORMAT]
    for path in sorted(source.files):
        stat = path.stat()
        parts.append(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def cache_dir() -> Path:
    root = os.environ.get("ALLOYKIT_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "alloykit") / "fingerprints"


def _read_cached(key: str) -> str | None:
    try:
        text = (cache_dir() / key).read_text().strip()
    except OSError:
        return None
    return text if len(text) == 64 else None


def _write_cached(key: str, value: str) -> None:
    """Store ``value``; a cache that cannot be written only costs a recomputation later."""
    directory = cache_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with written_whole(directory / key) as partial:
            partial.write_text(value)
    except OSError:
        return
