"""A smoke run of the speed benchmark: tiny checkpoints, alloykit only, no timing asserts."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import vs_mergekit

from alloykit.recipe import load_recipe

needs_time = pytest.mark.skipif(
    shutil.which(vs_mergekit.TIME) is None, reason="needs GNU time at /usr/bin/time"
)


@pytest.mark.parametrize("method", vs_mergekit.METHODS)
def test_every_benchmark_recipe_is_a_valid_alloykit_recipe(method: str, tmp_path: Path) -> None:
    models = {name: tmp_path / name for name in ("base", "ft1", "ft2", "ft3")}
    body = vs_mergekit.recipe(method, models)
    body.setdefault("parameters", {}).update(vs_mergekit.ALLOYKIT_OPTIONS.get(method, {}))
    path = tmp_path / "recipe.yml"
    path.write_text(yaml.safe_dump(body))
    assert load_recipe(path).merge_method == method


@needs_time
def test_smoke_run_prints_a_table_and_outputs_agree_with_themselves(tmp_path, capsys) -> None:
    options = ["--size", "tiny", "--rounds", "1", "--skip-mergekit", "--cache", str(tmp_path)]
    code = vs_mergekit.main([*options, "--only", "ties", "--only", "dare_ties"])
    assert code == 0
    table = capsys.readouterr().out
    assert "| ties |" in table and "| dare_ties |" in table
    models = {n: tmp_path / "synthetic" / "tiny" / n for n in ("base", "ft1", "ft2", "ft3")}
    scratch = tmp_path / "vs-mergekit"
    for name in ("a", "b"):
        out = scratch / name
        body = vs_mergekit.recipe("ties", models)
        (scratch / f"{name}.yml").write_text(yaml.safe_dump(body))
        vs_mergekit.timed(
            [*vs_mergekit.alloykit_command(), "merge", str(scratch / f"{name}.yml"), str(out)],
            scratch / f"{name}.log",
        )
    verdict = vs_mergekit.compare(scratch / "a", scratch / "b", models["base"], random=False)
    assert verdict.startswith("match")
