"""Fixtures for the example zoo: skip (with the reason) when its checkpoints are absent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from zoo_harness import ABSENT, ZOO, zoo_built


@pytest.fixture(scope="session")
def zoo() -> Path:
    if not zoo_built():
        pytest.skip(ABSENT)
    return ZOO


@pytest.fixture(scope="session")
def recorded(zoo: Path) -> dict:
    return json.loads((zoo / "scores.json").read_text())
