"""Fixtures: one thread for tiny SVDs, and a fine-tune with a changed norm."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from lora_files import variant, with_changed_norm


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """The SVDs here are of 32×64 matrices: extra threads only add synchronisation."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def norm_tuned(llama: dict[str, Path], tmp_path: Path) -> Path:
    """ft1 with a changed RMSNorm weight (a 1-D tensor no adapter can hold as low-rank)."""
    return variant(llama["ft1"], tmp_path / "norm-tuned", with_changed_norm)
