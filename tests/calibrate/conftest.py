"""The example zoo's base and tasks as calibration subjects; torch on one thread."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

ZOO = Path(__file__).resolve().parents[2] / "examples" / "zoo"


@pytest.fixture(autouse=True, scope="package")
def single_thread() -> Iterator[None]:
    """A 1 M-parameter model gains nothing from intra-op threads on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def zoo_base() -> Path:
    return ZOO / "base"


@pytest.fixture(scope="session")
def zoo_task() -> Path:
    return ZOO / "tasks" / "sort"


@pytest.fixture(scope="session")
def zoo_model(zoo_base: Path):
    from alloykit.evaluate import load_model

    return load_model(zoo_base)
