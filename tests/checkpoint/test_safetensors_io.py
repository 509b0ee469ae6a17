"""Reading safetensors headers/tensors and writing shards through DirectorySink."""

from __future__ import annotations

import json
import random
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from alloykit import native
from alloykit.checkpoint.safetensors_format import read_header, read_tensor
from alloykit.checkpoint.sink import JOURNAL, DirectorySink, OutputTensor, plan_shards
from alloykit.dtypes import F32, of_torch
from alloykit.errors import CheckpointError, OutputError


def test_read_tensor_matches_safetensors_library(tmp_path: Path) -> None:
    tensors = {
        "a": torch.randn(3, 5),
        "b": torch.randn(7).to(torch.bfloat16),
        "c": torch.arange(6, dtype=torch.int64).reshape(2, 3),
        "empty": torch.zeros(0, 4),
    }
    path = tmp_path / "m.safetensors"
    save_file(tensors, path)
    entries, _ = read_header(path)
    assert set(entries) == set(tensors)
    for name, tensor in tensors.items():
        assert torch.equal(read_tensor(entries[name]), tensor)


def test_truncated_file_is_a_checkpoint_error(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_file({"a": torch.randn(100)}, path)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match="past the end"):
        read_header(path)


def test_garbage_header_is_a_checkpoint_error(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    path.write_bytes(struct.pack("<Q", 5) + b"{nope")
    with pytest.raises(CheckpointError, match="corrupt safetensors header"):
        read_header(path)


def test_huge_declared_header_is_a_checkpoint_error(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    path.write_bytes(struct.pack("<Q", 10**12) + b"{}")
    with pytest.raises(CheckpointError, match="corrupt safetensors header"):
        read_header(path)


def test_shards_split_greedily_in_order() -> None:
    tensors = [OutputTensor(f"t{i}", F32, (10,)) for i in range(5)]  # 40 bytes each
    shards = plan_shards(tensors, 100)
    assert [[t.name for t in s] for s in shards] == [["t0", "t1"], ["t2", "t3"], ["t4"]]


def _sink(out: Path, tensors: list[OutputTensor], **kwargs) -> DirectorySink:
    return DirectorySink(
        out, tensors, shard_bytes=kwargs.pop("shard_bytes", 64), fingerprint="f", **kwargs
    )


def test_directory_sink_writes_loadable_shards_out_of_order(tmp_path: Path) -> None:
    data = {f"t{i}": torch.randn(4, i + 1).to(torch.bfloat16) for i in range(6)}
    layout = [OutputTensor(n, of_torch(t.dtype), tuple(t.shape)) for n, t in data.items()]
    out = tmp_path / "out"
    sink = _sink(out, layout)
    sink.open()
    for name in reversed(list(data)):
        sink.write(name, data[name])
    assert not out.exists()
    sink.commit()
    index = json.loads((out / "model.safetensors.index.json").read_text())
    loaded = {}
    for shard in set(index["weight_map"].values()):
        loaded.update(load_file(out / shard))
    assert set(loaded) == set(data)
    for name, tensor in data.items():
        assert torch.equal(loaded[name], tensor)
    assert not (out.with_name("out.partial")).exists()


def test_partial_directory_never_carries_the_final_name(tmp_path: Path) -> None:
    layout = [OutputTensor("a", F32, (2,)), OutputTensor("b", F32, (2,))]
    out = tmp_path / "out"
    sink = _sink(out, layout)
    sink.open()
    sink.write("a", torch.ones(2))
    sink.abort(keep_for_resume=True)
    assert not out.exists()
    assert (tmp_path / "out.partial").is_dir()


def test_resume_skips_journaled_tensors_and_rewrites_corrupt_ones(tmp_path: Path) -> None:
    layout = [OutputTensor(n, F32, (3,)) for n in ("a", "b", "c")]
    out = tmp_path / "out"
    first = _sink(out, layout)
    first.open()
    first.write("a", torch.ones(3))
    first.write("b", torch.full((3,), 2.0))
    first.abort(keep_for_resume=True)
    shard = next((tmp_path / "out.partial").glob("*.safetensors"))
    entries, _ = read_header(shard)
    raw = bytearray(shard.read_bytes())
    raw[entries["b"].start] ^= 0xFF
    shard.write_bytes(bytes(raw))
    second = _sink(out, layout)
    assert second.open() == 2
    assert second.verify_resumed() == ["b"]
    assert second.done == {"a"}
    second.write("b", torch.full((3,), 2.0))
    second.write("c", torch.full((3,), 3.0))
    second.commit()
    loaded = load_file(next(out.glob("*.safetensors")))
    assert torch.equal(loaded["a"], torch.ones(3))
    assert torch.equal(loaded["b"], torch.full((3,), 2.0))
    assert torch.equal(loaded["c"], torch.full((3,), 3.0))


def test_resume_with_a_different_plan_starts_over(tmp_path: Path) -> None:
    layout = [OutputTensor("a", F32, (3,))]
    out = tmp_path / "out"
    first = DirectorySink(out, layout, shard_bytes=64, fingerprint="one")
    first.open()
    first.write("a", torch.ones(3))
    first.abort(keep_for_resume=True)
    second = DirectorySink(out, layout, shard_bytes=64, fingerprint="two")
    assert second.open() == 0


def test_existing_nonempty_output_is_refused_without_force(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(OutputError, match="--force"):
        _sink(out, [OutputTensor("a", F32, (1,))]).open()


def test_force_replaces_existing_output(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("x")
    sink = _sink(out, [OutputTensor("a", F32, (1,))], force=True)
    sink.open()
    sink.write("a", torch.ones(1))
    sink.commit()
    assert not (out / "old.txt").exists()
    assert (out / "model.safetensors.index.json").exists()


def _crc32c_bitwise(data: bytes) -> int:
    """CRC-32C by its definition (reflected polynomial 0x82F63B78, inverted in and out), a bit
    at a time: the reference for the kernels' instruction and table versions."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


@pytest.mark.skipif(not native.available(), reason="alloykit's C kernels are not built here")
@pytest.mark.parametrize("build", native.builds())
@pytest.mark.parametrize("size", [0, 1, 9, 3 * 4096 - 1, 3 * 4096 + 5, 40_003])
def test_crc32c_is_the_castagnoli_crc_in_every_build(build: str, size: int) -> None:
    """Sizes from 3 * 4096 bytes take three interleaved streams joined by the CRC's linearity;
    a checksum continued over two pieces equals the checksum of the whole."""
    data = bytes(random.Random(size).getrandbits(8) for _ in range(size))
    with native.using(build):
        assert native.crc32c(b"123456789") == 0xE3069283  # the standard check value
        assert native.crc32c(data) == _crc32c_bitwise(data)
        cut = size // 3
        assert native.crc32c(data[cut:], native.crc32c(data[:cut])) == _crc32c_bitwise(data)


@pytest.mark.parametrize("written_with", ["crc32", "crc32c"])
def test_a_journal_is_verified_with_the_checksum_it_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, written_with: str
) -> None:
    """A merge resumed on another machine (with or without the crc32 instruction) checks the
    journal's tensors with the checksum the journal names, and still finds a corrupt one."""
    if written_with == "crc32c" and not native.available():
        pytest.skip("alloykit's C kernels are not built here")
    layout = [OutputTensor(n, F32, (64,)) for n in ("a", "b")]
    out = tmp_path / "out"
    with monkeypatch.context() as patched:
        patched.setattr("alloykit.checkpoint.sink.fastest_checksum", lambda: written_with)
        first = _sink(out, layout)
        first.open()
        first.write("a", torch.arange(64.0))
        first.write("b", torch.arange(64.0) * 2)
        first.abort(keep_for_resume=True)
    records = (tmp_path / "out.partial" / JOURNAL).read_text().splitlines()[1:]
    assert all(written_with in json.loads(line) for line in records)
    for shard in (tmp_path / "out.partial").glob("*.safetensors"):
        entries, _ = read_header(shard)
        if "b" in entries:  # one bit of b's data flipped
            raw = bytearray(shard.read_bytes())
            raw[entries["b"].start + 5] ^= 0x01
            shard.write_bytes(bytes(raw))
    second = _sink(out, layout)
    assert second.open() == 2
    assert second.verify_resumed() == ["b"]
    assert second.done == {"a"}
