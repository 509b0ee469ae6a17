"""``run_search`` end to end on a tiny family: outputs, resume, estimators, workers, the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import alloykit
from alloykit.cli.app import app
from alloykit.errors import AlloyError
from alloykit.search import run_search

pytest.importorskip("optuna", reason="the search extra is not installed")


def journal_lines(out: Path) -> list[dict]:
    lines = (out / "trials.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines[1:]]


def test_a_search_writes_its_trials_best_recipe_and_report(spec_of, tmp_path: Path) -> None:
    result = run_search(spec_of(trials=5), tmp_path / "out")
    trials = journal_lines(tmp_path / "out")
    assert sorted(t["trial"] for t in trials) == [0, 1, 2, 3, 4]
    assert result.best.fitness == max(t["fitness"] for t in trials)
    best = yaml.safe_load((tmp_path / "out" / "best.yml").read_text())
    assert best["models"][0]["parameters"]["weight"] == result.best.point["models[0].weight"]
    alloykit.plan(best)  # a plain recipe: no ranges left
    assert set(result.test_scores) == {"plus", "minus"}
    report = (tmp_path / "out" / "report.md").read_text()
    assert f"trial {result.best.trial}" in report and "held out" in report
    rows = (tmp_path / "out" / "trials.csv").read_text().splitlines()
    assert rows[0].startswith("trial,fitness,plus,minus,models[0].weight,models[1].weight")
    assert len(rows) == 6


def test_a_candidates_score_is_the_merge_of_its_recipe(spec_of, search_family, tmp_path) -> None:
    """The in-memory candidate scores what the same recipe merged to disk scores."""
    result = run_search(spec_of(trials=2), tmp_path / "out")
    merged = alloykit.merge(result.recipe, tmp_path / "merged")
    scores = {
        r.task: r.score
        for r in alloykit.evaluate.evaluate(
            merged, [search_family["plus"], search_family["minus"]], split="validation"
        )
    }
    assert scores == pytest.approx(result.best.scores)


def test_a_rerun_replays_the_journal_without_evaluating(spec_of, tmp_path: Path) -> None:
    first = run_search(spec_of(trials=4), tmp_path / "out")
    again = run_search(spec_of(trials=4), tmp_path / "out")
    assert again.evaluated == 0 and again.trials == first.trials
    more = run_search(spec_of(trials=6), tmp_path / "out")
    assert more.evaluated == 2 and more.trials[:4] == first.trials


def test_a_gaussian_process_search_replays_past_its_random_start(spec_of, tmp_path) -> None:
    """Optuna's GP sampler proposes its first 10 points at random, then from the fitted
    process (whose kernel fit starts from the last one): a resumed search must ask it the same
    points again from the journal, through both phases."""
    first = run_search(spec_of(trials=12, optimizer="gp"), tmp_path / "out")
    more = run_search(spec_of(trials=14, optimizer="gp"), tmp_path / "out")
    assert more.evaluated == 2 and more.trials[:12] == first.trials
    whole = run_search(spec_of(trials=14, optimizer="gp"), tmp_path / "again")
    assert [t.point for t in whole.trials] == [t.point for t in more.trials]


def test_another_spec_in_the_same_directory_is_refused(spec_of, tmp_path: Path) -> None:
    run_search(spec_of(trials=1), tmp_path / "out")
    with pytest.raises(alloykit.errors.AlloyError, match="another search spec"):
        run_search(spec_of(trials=1, seed=9), tmp_path / "out")


def test_the_irt_estimator_fits_on_the_endpoints_and_checks_itself(spec_of, tmp_path) -> None:
    spec = spec_of(trials=3, fitness={"estimator": "irt", "subset": 0.3, "calibration": 2})
    result = run_search(spec, tmp_path / "out")
    anchors = json.loads((tmp_path / "out" / "anchors.json").read_text())["responses"]
    assert len(anchors) == 5 and all(len(r["plus"]) == 30 for r in anchors.values())
    assert list(anchors)[3:] == ["calibration 0", "calibration 1"]
    assert len(result.estimator_check) == 3
    report = (tmp_path / "out" / "report.md").read_text()
    assert "Estimator check" in report and "2 calibration candidates" in report


def test_a_torn_anchors_file_is_computed_again(spec_of, tmp_path: Path) -> None:
    """A search killed while writing ``anchors.json`` (before it was atomic) left half a file;
    the rerun computes the anchors again instead of failing on it."""
    spec = spec_of(trials=2, fitness={"estimator": "irt", "subset": 0.3, "calibration": 1})
    first = run_search(spec, tmp_path / "out")
    anchors = tmp_path / "out" / "anchors.json"
    whole = anchors.read_text()
    anchors.write_text(whole[: len(whole) // 2])
    again = run_search(spec_of(trials=3, fitness=spec["fitness"]), tmp_path / "out")
    assert anchors.read_text() == whole
    assert again.trials[:2] == first.trials and again.evaluated == 1
    assert not list((tmp_path / "out").glob(".anchors.json.partial-*"))


def test_calibration_candidates_are_the_seeds_own_and_run_every_example(spec_of) -> None:
    """The calibration rows are candidates of the space: the same ones for a seed, others for
    another seed, each a recipe the worker runs on every example."""
    from alloykit.search.fitness import Fitness
    from alloykit.search.run import calibration_points
    from alloykit.search.space import Space
    from alloykit.search.spec import load_spec
    from alloykit.search.workers import CandidateWorker, Job

    spec = load_spec(spec_of(fitness={"estimator": "irt", "calibration": 3}))
    space = Space(spec)
    points = calibration_points(spec, space)
    assert len(points) == 3 and points == calibration_points(spec, space)
    other = load_spec(spec_of(fitness={"estimator": "irt", "calibration": 3}, seed=5))
    assert points != calibration_points(other, space)
    assert len({tuple(sorted(p.items())) for p in points}) == 3
    fitness = Fitness(spec)
    worker = CandidateWorker(spec, space.recipe(points[0])["base_model"])
    answers = worker.run(Job(fitness.full_requests(), recipe=space.recipe(points[0])))
    assert all(len(answers[name]) == len(split.examples) for name, split in fitness.tasks.items())


def test_cma_over_layer_groups_and_a_choice_of_methods(spec_of, tmp_path: Path) -> None:
    spec = spec_of(trials=6, optimizer="cma", layer_groups=2, methods=["task_arithmetic", "ties"])
    result = run_search(spec, tmp_path / "out")
    assert result.recipe["merge_method"] in ("task_arithmetic", "ties")
    assert len(result.recipe["models"][0]["parameters"]["weight"]) == 2


def test_nsga2_per_task_writes_a_pareto_chart(spec_of, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="the search extra is not installed")
    spec = spec_of(trials=4, optimizer="nsga2", objective="per_task", population=4)
    run_search(spec, tmp_path / "out")
    assert (tmp_path / "out" / "pareto.png").stat().st_size > 0


def test_local_worker_processes_give_the_trials_in_process_gives(spec_of, tmp_path) -> None:
    alone = run_search(spec_of(trials=4, population=2), tmp_path / "alone")
    pooled = run_search(spec_of(trials=4, population=2), tmp_path / "pooled", workers=2)
    assert [t.scores for t in pooled.trials] == [t.scores for t in alone.trials]


def test_a_search_on_a_local_ray_cluster(spec_of, tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="the ray extra is not installed")
    alone = run_search(spec_of(trials=2, population=2), tmp_path / "alone")
    on_ray = run_search(spec_of(trials=2, population=2), tmp_path / "ray", workers=2, use_ray=True)
    assert [t.scores for t in on_ray.trials] == [t.scores for t in alone.trials]


def test_the_cli_searches_and_writes_the_best_model(spec_of, tmp_path: Path) -> None:
    spec = tmp_path / "spec.yml"
    spec.write_text(yaml.safe_dump(spec_of(trials=2)))
    result = CliRunner().invoke(app, ["search", str(spec), str(tmp_path / "out"), "--write-best"])
    assert result.exit_code == 0, result.output
    assert "best: trial" in result.output
    assert (tmp_path / "out" / "model" / "config.json").exists()


def test_the_cli_reports_a_bad_spec_in_one_line(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yml"
    spec.write_text("recipe: {merge_method: linear}\ntasks: [t]\noptimiser: cma\n")
    result = CliRunner().invoke(app, ["search", str(spec), str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "optimiser: Extra inputs are not permitted" in result.output


def test_a_killed_search_resumes_with_no_duplicate(spec_of, tmp_path: Path) -> None:
    """The kill lands after the second trial; a tiny candidate takes milliseconds, so the
    search is long enough (40 trials) that it cannot finish in the moments before the kill."""
    total = 40
    spec = tmp_path / "spec.yml"
    spec.write_text(yaml.safe_dump(spec_of(trials=total)))
    out = tmp_path / "out"
    command = [str(Path(sys.executable).parent / "alloykit"), "search", str(spec), str(out)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if (out / "trials.jsonl").exists() and len(journal_lines(out)) >= 2:
            break
        time.sleep(0.2)
    assert process.poll() is None, process.stderr.read().decode()[-2000:]
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    killed_at = len(journal_lines(out))
    assert 2 <= killed_at < total
    finished = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-2000:]
    trials = [t["trial"] for t in journal_lines(out)]
    assert sorted(trials) == list(range(total))


def test_an_lm_eval_task_without_lm_eval_is_an_install_hint(
    spec_of, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "lm_eval", None)
    with pytest.raises(AlloyError, match="tasks: lm-evaluation-harness is not installed"):
        run_search(spec_of(tasks=["lm_eval:anything"]), tmp_path / "out")
