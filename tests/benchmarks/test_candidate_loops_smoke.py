"""benchmarks/candidate_loops.py times every loop on the same candidates and gets the same
fitness in memory as through disk."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import candidate_loops


class FixedCost:
    """A loop whose stages cost what it is told, answering its name's length."""

    def __init__(self, name: str, merge: float) -> None:
        self.name, self.merge, self.calls = name, merge, 0

    def __call__(self, recipe: dict, clock: candidate_loops.Clock) -> int:
        self.calls += 1
        clock.add("merge", self.merge, self.merge / 2)
        clock.add("fitness", 1.0, 1.0)
        return recipe["answer"]

    def close(self) -> None:
        """Nothing to release."""


def test_every_loop_runs_every_candidate_each_round_after_a_warm_up() -> None:
    loops = [FixedCost("in memory", 0.5), FixedCost("disk", 3.5)]
    result = candidate_loops.compare(loops, {"answer": 0}, [{"answer": 1}, {"answer": 2}], 3)
    assert [loop.calls for loop in loops] == [1 + 2 * 3, 1 + 2 * 3]
    assert result["disk"]["wall"]["ratio"] == 4.5 / 1.5
    assert result["disk"]["cpu"]["ratio"] == 2.75 / 1.25
    assert result["disk"]["cpu"]["stages"] == {"merge": 1.75, "fitness": 1.0}
    assert result["disk"]["same_answers"]


def test_the_synthetic_family_scores_the_same_in_memory_and_from_disk(tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    out = tmp_path / "loops.json"
    try:
        arguments = ["--size", "tiny", "--experts", "2", "--candidates", "2", "--rounds", "1"]
        assert candidate_loops.main([*arguments, "--root", str(tmp_path), "--json", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    result = json.loads(out.read_text())
    assert result["alloykit disk"]["same_answers"]
    assert result["alloykit disk"]["largest_difference"] == 0.0
    assert set(result["alloykit disk"]["cpu"]["stages"]) == {"merge + write", "reload", "fitness"}
    assert set(result["in memory"]["cpu"]["stages"]) == {"merge", "fitness"}
