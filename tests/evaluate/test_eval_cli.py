"""``alloykit eval``: a table or JSON on stdout; bad input is one line on stderr and exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from evaluate_harness import GENERATION_ROWS, write_jsonl
from typer.testing import CliRunner, Result

from alloykit.cli import app
from alloykit.evaluate import evaluate


def run_cli(*args: str | Path) -> Result:
    return CliRunner().invoke(app, ["eval", *map(str, args)])


def assert_one_line_error(result: Result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    assert result.stdout == ""


def test_table_lists_task_metric_score_and_n(tiny_lm_dir: Path, task_dirs) -> None:
    result = run_cli(
        tiny_lm_dir,
        "--task",
        task_dirs["generation"],
        "--task",
        task_dirs["multiple_choice"],
        "--limit",
        "4",
    )
    assert result.exit_code == 0, result.output
    expected = evaluate(
        tiny_lm_dir, [task_dirs["generation"], task_dirs["multiple_choice"]], limit=4
    )
    for row in expected:
        line = next(line for line in result.stdout.splitlines() if f" {row.task} " in line)
        assert row.metric in line and f"{row.score:.4f}" in line and line.split()[-2] == "4"
    assert "(test split)" in result.stdout


def test_json_output_is_machine_readable(tiny_lm_dir: Path, task_dirs) -> None:
    result = run_cli(
        tiny_lm_dir,
        "--task",
        task_dirs["perplexity"],
        "--json",
        "--limit",
        "2",
        "--batch-size",
        "1",
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    [row] = report["results"]
    assert report["model"] == str(tiny_lm_dir)
    assert (row["task"], row["metric"], row["split"], row["n"]) == (
        "prose",
        "perplexity",
        "test",
        31 + 16,
    )
    assert row["score"] > 1


def test_split_and_seeded_subset_options(tiny_lm_dir: Path, task_dirs) -> None:
    args = [tiny_lm_dir, "--task", task_dirs["generation"], "--json", "--split", "validation"]
    args += ["--threads", "1"]
    first = json.loads(run_cli(*args, "--limit", "3", "--subset-seed", "4").stdout)
    again = json.loads(run_cli(*args, "--limit", "3", "--subset-seed", "4").stdout)
    assert first["results"][0]["n"] == 3 and first["results"][0]["split"] == "validation"
    assert first["results"][0]["score"] == again["results"][0]["score"]


def test_missing_model_directory(tmp_path: Path, task_dirs) -> None:
    result = run_cli(tmp_path / "nowhere", "--task", task_dirs["generation"])
    assert_one_line_error(result, "nowhere", "not found")


def test_no_tasks_given(tiny_lm_dir: Path) -> None:
    assert_one_line_error(run_cli(tiny_lm_dir), "no tasks given", "--task")


def test_bad_task_file(tiny_lm_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "task.yaml").write_text("type: generation\nmax_tokens: 3\n")
    assert_one_line_error(run_cli(tiny_lm_dir, "--task", tmp_path), "task.yaml", "'max_tokens'")


def test_malformed_jsonl_line_names_file_and_line(tiny_lm_dir: Path, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "test.jsonl", GENERATION_ROWS[:3])
    path.write_text(path.read_text() + '{"prompt": "x", "answer": \n')
    assert_one_line_error(run_cli(tiny_lm_dir, "--task", tmp_path), f"{path}:4:", "malformed JSON")


def test_missing_split(tiny_lm_dir: Path, task_dirs) -> None:
    result = run_cli(tiny_lm_dir, "--task", task_dirs["multiple_choice"], "--split", "train")
    assert_one_line_error(result, "no 'train' split")


def test_unknown_device(tiny_lm_dir: Path, task_dirs) -> None:
    result = run_cli(tiny_lm_dir, "--task", task_dirs["generation"], "--device", "tpu")
    assert_one_line_error(result, "--device")


def test_lm_eval_missing_is_an_install_hint(
    tiny_lm_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "lm_eval", None)
    result = run_cli(tiny_lm_dir, "--lm-eval", "anything")
    assert_one_line_error(result, "not installed", 'pip install "alloykit[lm-eval]"')


def test_both_strategies_give_the_same_scores(tiny_lm_dir: Path, task_dirs) -> None:
    scores = {}
    for strategy in ("forced", "generate"):
        args = ["--task", task_dirs["generation"], "--json", "--strategy", strategy]
        result = run_cli(tiny_lm_dir, *args)
        assert result.exit_code == 0, result.output
        [row] = json.loads(result.stdout)["results"]
        scores[strategy] = (row["score"], row["n"])
    assert scores["forced"] == scores["generate"]


def test_an_unknown_strategy_is_one_line(tiny_lm_dir: Path, task_dirs) -> None:
    result = run_cli(tiny_lm_dir, "--task", task_dirs["generation"], "--strategy", "beam")
    assert_one_line_error(result, "unknown exact-match strategy 'beam'", "forced, generate")
