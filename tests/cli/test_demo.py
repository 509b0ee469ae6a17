"""``alloykit demo`` runs the whole loop: merge zoo experts, evaluate, print the table."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from alloykit.cli import app


def test_demo_merges_experts_and_prints_a_score_table(quick_zoo, tmp_path):
    out = tmp_path / "merged"
    result = CliRunner().invoke(
        app,
        ["demo", "--zoo", str(quick_zoo), "--out", str(out), "--limit", "4"],
        terminal_width=200,
    )
    assert result.exit_code == 0, result.output
    skills = sorted(p.name for p in (quick_zoo / "experts").iterdir())[:4]
    for label in ("base", "merge", *skills):
        assert label in result.output
    assert "normalized average" in result.output
    assert "method: " in result.output and "benchmarks/quality.py" in result.output
    assert json.loads((out / "config.json").read_text())["model_type"] == "llama"


def test_demo_without_a_zoo_is_a_one_line_error(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--zoo", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "zoo" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
