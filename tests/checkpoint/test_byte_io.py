"""Torch-free byte I/O: rows read into any buffer, rows written as raw bytes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from alloykit.checkpoint.safetensors_format import TensorEntry, read_header, read_into
from alloykit.checkpoint.sink import JOURNAL, DirectorySink, OutputTensor, StateDictSink
from alloykit.checkpoint.source import open_source
from alloykit.dtypes import BF16, F16, F32
from alloykit.errors import CheckpointError

MATRIX = np.arange(24, dtype=np.float32).reshape(6, 4)


def _stored(tmp_path: Path) -> dict[str, TensorEntry]:
    path = tmp_path / "m.safetensors"
    save_file({"w": MATRIX, "h": np.full((3,), 0.5, np.float16)}, str(path))
    return read_header(path)[0]


def test_read_into_reads_the_rows_asked_for_into_a_numpy_array(tmp_path: Path) -> None:
    entry = _stored(tmp_path)["w"]
    buffer = np.zeros(64, dtype=np.uint8)
    assert read_into(entry, 2, 5, buffer) == 48
    assert np.array_equal(buffer[:48].view(np.float32).reshape(3, 4), MATRIX[2:5])


def test_read_into_fills_a_typed_array_or_a_bytearray(tmp_path: Path) -> None:
    entry = _stored(tmp_path)["w"]
    typed = np.zeros((6, 4), dtype=np.float32)
    assert read_into(entry, 0, 6, typed) == MATRIX.nbytes
    assert np.array_equal(typed, MATRIX)
    raw = bytearray(16)
    assert read_into(entry, 5, 6, raw) == 16
    assert np.array_equal(np.frombuffer(raw, np.float32), MATRIX[5])


def test_read_into_reads_through_the_descriptor_given_and_leaves_it_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entries = _stored(tmp_path)
    fd = os.open(entries["w"].path, os.O_RDONLY)
    monkeypatch.setattr(os, "open", lambda *args: pytest.fail("opened the file again"))
    try:
        buffer = np.zeros(6, dtype=np.uint8)
        assert read_into(entries["h"], 0, 3, buffer, fd=fd) == 6
        assert os.fstat(fd).st_size > 0  # still open
    finally:
        os.close(fd)
    assert np.array_equal(buffer.view(np.float16), np.full((3,), 0.5, np.float16))


def test_read_into_without_a_descriptor_closes_the_file_it_opens(tmp_path: Path) -> None:
    entry = _stored(tmp_path)["w"]
    before = len(os.listdir("/proc/self/fd"))
    read_into(entry, 0, 6, np.zeros(MATRIX.nbytes, np.uint8))
    assert len(os.listdir("/proc/self/fd")) == before


def test_read_into_a_truncated_file_is_a_checkpoint_error(tmp_path: Path) -> None:
    entry = _stored(tmp_path)["w"]
    with entry.path.open("r+b") as handle:
        handle.truncate(entry.start + 40)
    with pytest.raises(CheckpointError, match="unexpected end of file reading tensor 'w'"):
        read_into(entry, 0, 6, np.zeros(MATRIX.nbytes, np.uint8))


def test_read_into_refuses_a_buffer_too_small(tmp_path: Path) -> None:
    entry = _stored(tmp_path)["w"]
    with pytest.raises(ValueError, match="buffer of 32 bytes"):
        read_into(entry, 0, 3, bytearray(32))


def test_a_source_tells_where_stored_tensors_are_and_not_pickled_ones(tmp_path: Path) -> None:
    entries = _stored(tmp_path)
    stored = open_source(str(tmp_path / "m.safetensors"))
    assert stored.entry("w") == entries["w"]
    assert (stored.tensors["h"].dtype, stored.nbytes("h")) == (F16, 6)
    torch.save({"w": torch.ones(2, 3, dtype=torch.bfloat16)}, tmp_path / "p.bin")
    pickled = open_source(str(tmp_path / "p.bin"), allow_pickle=True)
    assert pickled.entry("w") is None
    assert (pickled.tensors["w"].dtype, pickled.nbytes("w")) == (BF16, 12)


def test_a_pickled_tensor_safetensors_cannot_store_is_a_checkpoint_error(tmp_path: Path) -> None:
    torch.save({"w": torch.ones(2, dtype=torch.complex64)}, tmp_path / "p.bin")
    with pytest.raises(CheckpointError, match=r"'w' is torch\.complex64"):
        open_source(str(tmp_path / "p.bin"), allow_pickle=True)


TENSORS = {
    "bf": torch.randn(5, 3, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16),
    "f": torch.arange(8, dtype=torch.float32).reshape(4, 2),
    "scalar": torch.tensor(2.5),
}
LAYOUT = [
    OutputTensor("bf", BF16, (5, 3)),
    OutputTensor("f", F32, (4, 2)),
    OutputTensor("scalar", F32, ()),
]


def _as_array(rows: torch.Tensor) -> np.ndarray:
    """Rows as the torch-free lane holds them: bfloat16 as 16-bit words."""
    return rows.view(torch.int16).numpy() if rows.dtype == torch.bfloat16 else rows.numpy()


def _chunks(tensor: torch.Tensor) -> list[tuple[int, torch.Tensor, int]]:
    """(first row, rows, row count) two rows at a time; a 0-dimensional tensor is one row."""
    if not tensor.dim():
        return [(0, tensor, 1)]
    return [(s, tensor[s : s + 2], len(tensor[s : s + 2])) for s in range(0, len(tensor), 2)]


def _written(out: Path, write: str) -> tuple[list[str], dict[str, bytes]]:
    """The journal and shard bytes of a sink fed two rows at a time through ``write``."""
    sink = DirectorySink(out, LAYOUT, shard_bytes=48, fingerprint="f")
    sink.open()
    for name, tensor in TENSORS.items():
        for start, rows, count in _chunks(tensor):
            if write == "rows":
                sink.write_rows(name, start, rows)
            else:
                sink.write_bytes(name, start, _as_array(rows), count)
        sink.finish(name)
    sink.abort(keep_for_resume=True)
    partial = out.with_name(out.name + ".partial")
    shards = {p.name: p.read_bytes() for p in partial.glob("*.safetensors")}
    return (partial / JOURNAL).read_text().splitlines(), shards


def test_write_bytes_writes_what_write_rows_writes(tmp_path: Path) -> None:
    journal, shards = _written(tmp_path / "rows", "rows")
    assert _written(tmp_path / "bytes", "bytes") == (journal, shards)
    assert len(shards) == 2
    assert {json.loads(line).get("name") for line in journal[1:]} == set(TENSORS)


def test_write_bytes_refuses_rows_out_of_order_or_of_the_wrong_size(tmp_path: Path) -> None:
    sink = DirectorySink(tmp_path / "out", LAYOUT, shard_bytes=48, fingerprint="f")
    sink.open()
    with pytest.raises(RuntimeError, match="out of order"):
        sink.write_bytes("f", 2, np.zeros((2, 2), np.float32), 2)
    with pytest.raises(RuntimeError, match="2 rows of f given as 12 bytes"):
        sink.write_bytes("f", 0, np.zeros(3, np.float32), 2)
    sink.abort(keep_for_resume=False)


def test_state_dict_sink_takes_rows_as_bytes() -> None:
    sink = StateDictSink(LAYOUT)
    for name, tensor in TENSORS.items():
        for start, rows, count in _chunks(tensor):
            sink.write_bytes(name, start, memoryview(_as_array(rows)), count)
    for name, tensor in TENSORS.items():
        assert sink.tensors[name].dtype == tensor.dtype
        assert torch.equal(sink.tensors[name], tensor)
