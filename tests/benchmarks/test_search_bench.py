"""benchmarks/search.py: the hand-set comparison is the best data-free row, and each --method
gives a spec whose search space holds the method's own searched parameter."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import search


def row(name: str, normalized: float, subset: str = "8", **extra) -> dict:
    return {"name": name, "subset": subset, "normalized": normalized, "extra": extra}


def test_hand_set_best_skips_data_driven_rows(tmp_path: Path) -> None:
    rows = [
        row("regmean_pp", 0.95, data_driven=True),
        row("regmean (defaults)", 0.93),
        row("fisher", 0.92),
        row("wudi", 0.91),
        row("tsv_merge", 0.72),
        row("wudi", 0.99, subset="4"),
    ]
    path = tmp_path / "quality.json"
    path.write_text(json.dumps({"rows": rows}))
    assert search.hand_set_best(path, 8) == ("wudi", 0.91)
    assert search.hand_set_best(path, 4) == ("wudi", 0.99)


def test_each_method_searches_its_own_parameter(tmp_path: Path) -> None:
    args = argparse.Namespace(
        max_weight=2.0,
        optimizer="cma",
        trials=3,
        layer_groups=1,
        filters=[],
        population=None,
        estimator="irt",
        subset=0.1,
        strategy="forced",
        seed=0,
    )
    for method, searched in (
        ("task_arithmetic", None),
        ("tsv_merge", "alpha"),
        ("wudi", "learning_rate"),
    ):
        args.method = method
        spec = search.spec_for(tmp_path, ["a", "b"], args)
        parameters = spec["recipe"]["parameters"]
        assert spec["recipe"]["merge_method"] == method
        assert [m["parameters"]["weight"] for m in spec["recipe"]["models"]] == [
            {"min": 0.0, "max": 2.0}
        ] * 2
        ranges = [k for k, v in parameters.items() if isinstance(v, dict)]
        assert ranges == ([searched] if searched else [])
