"""Faults around the output: a disk too small (found before writing), a disk that fills up
mid-merge, a second writer, and a merge killed with SIGKILL. Each ends with one line, exit 2
for the first three, and the partial output kept for a resume where there is one."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections import namedtuple
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

import alloykit
from alloykit.checkpoint import sink as sink_module
from alloykit.checkpoint.output_lock import OutputLock
from alloykit.cli import app

Usage = namedtuple("Usage", "total used free")


@pytest.fixture
def recipe_file(llama, tmp_path) -> Path:
    recipe = {
        "merge_method": "task_arithmetic",
        "base_model": str(llama["base"]),
        "models": [{"model": str(llama["ft1"])}, {"model": str(llama["ft2"])}],
    }
    path = tmp_path / "recipe.yml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _merge(recipe: Path, out: Path, *extra: str):
    return CliRunner().invoke(app, ["merge", str(recipe), str(out), "--threads", "1", *extra])


def _loaded(out: Path) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for shard in sorted(out.glob("*.safetensors")):
        tensors.update(load_file(shard))
    return tensors


def test_too_little_free_space_is_refused_before_any_write(recipe_file, tmp_path, monkeypatch):
    monkeypatch.setattr(sink_module.shutil, "disk_usage", lambda path: Usage(10**9, 10**9, 1000))
    out = tmp_path / "out"
    result = _merge(recipe_file, out)
    assert result.exit_code == 2
    assert "not enough free space" in result.output and "1.00 KB free" in result.output
    assert not out.exists() and not (tmp_path / "out.partial").exists()


def test_a_full_disk_mid_merge_keeps_the_partial_output_for_a_resume(
    recipe_file, tmp_path, monkeypatch
):
    real_pwrite, writes = os.pwrite, {"n": 0}

    def pwrite_until_full(fd, data, offset):
        writes["n"] += 1
        if writes["n"] > 12:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(sink_module.os, "pwrite", pwrite_until_full)
    out = tmp_path / "out"
    result = _merge(recipe_file, out)
    assert result.exit_code == 2, result.output
    message = result.output.strip()
    assert "no space left" in message and "resumes" in message and "\n" not in message
    assert (tmp_path / "out.partial").is_dir() and not out.exists()
    assert not (tmp_path / "out.partial.lock").exists()

    monkeypatch.setattr(sink_module.os, "pwrite", real_pwrite)
    finished: list[str] = []
    alloykit.merge(str(recipe_file), out, threads=1, on_done=lambda e: finished.append(e.name))
    assert 0 < len(finished) < len(alloykit.plan(str(recipe_file)).entries)  # resumed
    expected = alloykit.merge_to_state_dict(str(recipe_file))
    merged = _loaded(out)
    assert all(torch.equal(merged[name], tensor) for name, tensor in expected.items())


def test_a_full_disk_anywhere_else_is_exit_2(recipe_file, tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "config.json")

    monkeypatch.setattr("alloykit.api.write_config", full)
    result = _merge(recipe_file, tmp_path / "out")
    assert result.exit_code == 2
    assert "no space left" in result.output and "internal error" not in result.output


HOLDER = """
import sys
from pathlib import Path
from alloykit.checkpoint.output_lock import OutputLock
lock = OutputLock(Path(sys.argv[1]))
lock.acquire()
print("locked", flush=True)
sys.stdin.readline()
"""


def test_a_second_writer_is_refused_naming_the_first(recipe_file, tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path / "out.partial")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        result = _merge(recipe_file, out)
        assert result.exit_code == 2
        assert "being written by another alloykit" in result.output
        assert f"pid {holder.pid}" in result.output
        assert not out.exists()
    finally:
        holder.communicate("\n", timeout=30)
    assert _merge(recipe_file, out).exit_code == 0  # free again


def test_a_dead_owners_lock_is_taken_over(recipe_file, tmp_path):
    lock = tmp_path / "out.partial.lock"
    lock.write_text(json.dumps({"pid": 2**22 + 7, "host": "elsewhere", "since": 0}))
    result = _merge(recipe_file, tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert not lock.exists()


def test_the_lock_is_held_while_the_merge_writes(recipe_file, tmp_path):
    seen: list[bool] = []

    def try_lock(entry) -> None:
        other = OutputLock(tmp_path / "out.partial")
        try:
            other.acquire()
            seen.append(False)
            other.release()
        except alloykit.errors.OutputError:
            seen.append(True)

    alloykit.merge(str(recipe_file), tmp_path / "out", threads=1, on_done=try_lock)
    assert seen and all(seen)


KILLED = """
import os, signal, sys
import alloykit
done = []
def kill_after_five(entry):
    done.append(entry.name)
    if len(done) == 5:
        os.kill(os.getpid(), signal.SIGKILL)
alloykit.merge(sys.argv[1], sys.argv[2], threads=1, on_done=kill_after_five)
"""


def test_a_merge_killed_with_sigkill_resumes(recipe_file, tmp_path):
    out = tmp_path / "out"
    killed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(KILLED), str(recipe_file), str(out)],
        capture_output=True, timeout=300,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL
    assert (tmp_path / "out.partial").is_dir() and (tmp_path / "out.partial.lock").exists()
    finished: list[str] = []
    alloykit.merge(str(recipe_file), out, threads=1, on_done=lambda e: finished.append(e.name))
    assert len(finished) == len(alloykit.plan(str(recipe_file)).entries) - 5
    expected = alloykit.merge_to_state_dict(str(recipe_file))
    merged = _loaded(out)
    assert all(torch.equal(merged[name], tensor) for name, tensor in expected.items())
    assert not (tmp_path / "out.partial").exists() and not (tmp_path / "out.partial.lock").exists()
