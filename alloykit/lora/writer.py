"""Writes an adapter directory atomically, one tensor at a time.

Ranks chosen by ``--energy`` are known only after each module's SVD, so the safetensors header
cannot be laid out up front as :class:`~alloykit.checkpoint.sink.DirectorySink` does. Tensors
are appended to a spool file as they are made (memory holds one module at a time); ``commit``
writes the header, streams the spool after it, and publishes ``OUT.partial`` as ``OUT``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import TracebackType
from typing import Any

import torch

from alloykit.checkpoint.sink import check_output_dir, publish_directory, tensor_bytes
from alloykit.dtypes import of_torch
from alloykit.lora.adapter import CONFIG_FILE, WEIGHTS_FILE

SPOOL = ".adapter-spool"


class AdapterWriter:
    """``with AdapterWriter(out) as writer: writer.add(key, t); ...; writer.commit(config)``."""

    def __init__(self, out_dir: Path, *, force: bool = False) -> None:
        self.out_dir = Path(out_dir).absolute()
        self.partial_dir = self.out_dir.with_name(self.out_dir.name + ".partial")
        check_output_dir(self.out_dir, force)
        self._header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
        self._offset = 0
        self._spool = None

    def __enter__(self) -> AdapterWriter:
        if self.partial_dir.exists():
            shutil.rmtree(self.partial_dir)
        self.partial_dir.mkdir(parents=True)
        self._spool = (self.partial_dir / SPOOL).open("wb")
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._spool is not None:
            self._spool.close()
            self._spool = None
        if kind is not None and self.partial_dir.exists():
            shutil.rmtree(self.partial_dir, ignore_errors=True)

    def add(self, key: str, tensor: torch.Tensor) -> None:
        """Append one tensor (written as stored: choose its dtype before)."""
        assert self._spool is not None, "use AdapterWriter as a context manager"
        if key in self._header:
            raise RuntimeError(f"adapter writer: {key} written twice")
        data = tensor_bytes(tensor.detach().cpu())
        self._spool.write(data)
        end = self._offset + len(data)
        self._header[key] = {
            "dtype": of_torch(tensor.dtype).code,
            "shape": list(tensor.shape),
            "data_offsets": [self._offset, end],
        }
        self._offset = end

    def commit(self, config: dict[str, Any], readme: str) -> Path:
        """Write the weights file, config and README, then rename ``OUT.partial`` to ``OUT``."""
        assert self._spool is not None
        self._spool.close()
        self._spool = None
        spool = self.partial_dir / SPOOL
        raw = json.dumps(self._header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        with (self.partial_dir / WEIGHTS_FILE).open("wb") as out, spool.open("rb") as data:
            out.write(len(raw).to_bytes(8, "little") + raw)
            shutil.copyfileobj(data, out, 16 * 1024 * 1024)
        spool.unlink()
        text = json.dumps(config, indent=2) + "\n"
        (self.partial_dir / CONFIG_FILE).write_text(text)
        (self.partial_dir / "README.md").write_text(readme)
        return publish_directory(self.partial_dir, self.out_dir)
