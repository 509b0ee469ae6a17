"""Shared fixtures: tiny model families built once per test session, offline."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Caches (model fingerprints, statistics) go to a directory of this test session, never ~/.cache.
os.environ["ALLOYKIT_CACHE"] = tempfile.mkdtemp(prefix="alloykit-test-cache-")


@pytest.fixture(scope="session")
def family_models(tmp_path_factory: pytest.TempPathFactory):
    """``family_models(name)`` → {"base": dir, "ft1": dir, "ft2": dir} for a tiny family."""
    from alloykit.tiny_models import build_family

    cache: dict[str, dict[str, Path]] = {}

    def get(family: str) -> dict[str, Path]:
        if family not in cache:
            root = tmp_path_factory.mktemp(f"models-{family}")
            cache[family] = build_family(family, root, finetunes=3, seed=0)
        return cache[family]

    return get


@pytest.fixture(scope="session")
def llama(family_models) -> dict[str, Path]:
    return family_models("llama")


@pytest.fixture(scope="session")
def llama_bf16(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny llama family stored in bfloat16, as most published checkpoints are."""
    import torch

    from alloykit.tiny_models import build_family

    root = tmp_path_factory.mktemp("models-llama-bf16")
    return build_family("llama", root, finetunes=3, seed=0, dtype=torch.bfloat16)


@pytest.fixture(scope="session")
def quick_zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny zoo built by ``examples/zoo/build.py --quick`` (its models learn nothing)."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    out = tmp_path_factory.mktemp("quick-zoo")
    subprocess.run(
        [sys.executable, str(root / "examples" / "zoo" / "build.py"), "--out", str(out), "--quick"],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return out
