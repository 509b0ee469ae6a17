"""A model's fingerprint (what statistics files record): SHA-256 over the sorted tensors'
names, dtypes, shapes and bytes, streamed, and cached per set of files by size and mtime."""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from alloykit.calibrate.fingerprint import fingerprint
from alloykit.checkpoint import fingerprint as fingerprinting
from alloykit.checkpoint.source import open_source


@pytest.fixture(autouse=True)
def private_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("ALLOYKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(fingerprinting, "_memory", {})


def _by_definition(weights) -> str:
    tensors = load_file(str(weights))
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name]
        header = [name, str(tensor.dtype).removeprefix("torch."), list(tensor.shape)]
        digest.update(json.dumps(header).encode() + b"\n")
        digest.update(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def test_the_fingerprint_follows_its_definition_in_small_blocks(llama, monkeypatch):
    monkeypatch.setattr(fingerprinting, "BLOCK_BYTES", 100)  # many blocks per tensor
    source = open_source(str(llama["ft1"]))
    assert fingerprint(source) == _by_definition(llama["ft1"] / "model.safetensors")


def test_a_copy_has_the_same_fingerprint_and_another_model_not(llama, tmp_path):
    copy = shutil.copytree(llama["ft1"], tmp_path / "copy")
    first = fingerprint(open_source(str(llama["ft1"])))
    assert fingerprint(open_source(str(copy))) == first
    assert fingerprint(open_source(str(llama["ft2"]))) != first


def test_a_repeat_is_served_from_the_disk_cache(llama, monkeypatch):
    first = fingerprint(open_source(str(llama["ft1"])))
    monkeypatch.setattr(fingerprinting, "_memory", {})
    monkeypatch.setattr(fingerprinting, "_compute", lambda source: pytest.fail("recomputed"))
    assert fingerprint(open_source(str(llama["ft1"]))) == first


def test_a_changed_file_is_fingerprinted_again(llama, tmp_path):
    copy = shutil.copytree(llama["ft1"], tmp_path / "copy")
    before = fingerprint(open_source(str(copy)))
    weights = copy / "model.safetensors"
    tensors = load_file(str(weights))
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + 1
    save_file(tensors, str(weights), metadata={"format": "pt"})
    os.utime(weights, ns=(1, 1))
    assert fingerprint(open_source(str(copy))) == _by_definition(weights) != before


def test_an_unwritable_cache_only_costs_a_recomputation(llama, monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("ALLOYKIT_CACHE", str(blocker))  # a file, so no directory under it
    source = open_source(str(llama["ft1"]))
    assert fingerprint(source) == _by_definition(llama["ft1"] / "model.safetensors")
