"""Where the example zoo lives, what it holds, and how close a subset score must be."""

from __future__ import annotations

import math
from pathlib import Path

ZOO = Path(__file__).resolve().parents[2] / "examples" / "zoo"
ABSENT = "zoo checkpoints absent: build them with `python examples/zoo/build.py`"


def zoo_built() -> bool:
    return (ZOO / "base" / "model.safetensors").is_file() and (ZOO / "scores.json").is_file()


def expert_names() -> list[str]:
    experts = ZOO / "experts"
    return sorted(path.name for path in experts.iterdir()) if experts.is_dir() else []


def tolerance(recorded: float, subset: int) -> float:
    """How far a score on ``subset`` test examples may fall from the full-split score.

    Three binomial standard deviations of a subset mean, plus one example for ties and
    batching effects on the boundary of a right answer.
    """
    return 3 * math.sqrt(recorded * (1 - recorded) / subset) + 1 / subset
