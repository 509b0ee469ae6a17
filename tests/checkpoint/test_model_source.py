"""Resolving model references: directories, single files, and the offline Hugging Face cache."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from alloykit.checkpoint.source import open_source
from alloykit.errors import CheckpointError


def fake_hub_cache(root: Path, repo_id: str, model_dir: Path) -> Path:
    """Lay out ``model_dir`` as the hub cache does: blobs, a snapshot of links, refs/main."""
    repo = root / ("models--" + repo_id.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for path in model_dir.iterdir():
        shutil.copyfile(path, snapshot / path.name)
    return snapshot


def test_hub_id_resolves_from_the_local_cache_without_network(llama, tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    fake_hub_cache(cache, "someorg/tiny-llama", llama["base"])
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    source = open_source("someorg/tiny-llama")
    assert "model.embed_tokens.weight" in source.tensors
    assert source.config["model_type"] == "llama"


def test_hub_id_missing_from_cache_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(CheckpointError, match="not in the local Hugging Face cache"):
        open_source("someorg/absent-model")


def test_single_safetensors_file_is_a_model(tmp_path):
    path = tmp_path / "weights.safetensors"
    save_file({"w": torch.ones(2, 2)}, path)
    source = open_source(str(path))
    assert torch.equal(source.read("w"), torch.ones(2, 2))


def test_relative_reference_is_found_next_to_the_recipe(tmp_path, monkeypatch):
    (tmp_path / "models").mkdir()
    save_file({"w": torch.ones(2)}, tmp_path / "models" / "m.safetensors")
    monkeypatch.chdir("/")
    source = open_source("models/m.safetensors", search_dirs=(tmp_path,))
    assert source.tensors["w"].shape == (2,)
