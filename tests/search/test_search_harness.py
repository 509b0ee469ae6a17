"""A search scored on lm-evaluation-harness tasks (``lm_eval:NAME``): lm-eval runs each task
as its YAML says, on the documents and split the search picks, and each document's verdict is
the one alloykit gives the same example.

Skipped unless lm-eval is installed (``pip install "alloykit[lm-eval]"``; CI installs it).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alloykit.errors import AlloyError
from alloykit.evaluate import choice_hits, load_model, load_task
from alloykit.evaluate.harness_items import HarnessTasks
from alloykit.search import run_search

pytest.importorskip("lm_eval", reason="the lm-eval extra is not installed")
pytest.importorskip("optuna", reason="the search extra is not installed")

TASK_YAML = """\
task: plus_harness
dataset_path: json
dataset_kwargs:
  data_files:
    validation: {folder}/validation.jsonl
    test: {folder}/test.jsonl
validation_split: validation
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{prompt}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
target_delimiter: ""
metric_list:
  - metric: acc
"""


@pytest.fixture()
def harness_folder(search_family: dict[str, Path], tmp_path: Path, monkeypatch) -> Path:
    """lm-eval's definition of the family's ``plus`` task (its own JSONL files), offline."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    folder = tmp_path / "lm-eval-tasks"
    folder.mkdir()
    (folder / "plus_harness.yaml").write_text(TASK_YAML.format(folder=search_family["plus"]))
    return folder


@pytest.mark.parametrize("split", ["validation", "test"])
def test_each_document_gets_alloykits_verdict_in_the_order_asked(
    search_family, harness_folder: Path, split: str
) -> None:
    model, tokenizer = load_model(search_family["ft1"], "cpu")
    examples = load_task(search_family["plus"]).examples(split)
    asked = [7, 2, 5, 0, 9, 3]  # not in index order: lm-eval's samples= must be given sorted
    hits = HarnessTasks(harness_folder).hits(
        model, tokenizer, {"plus_harness": asked}, split, batch_size=4
    )
    expected = choice_hits(model, tokenizer, [examples[i] for i in asked])
    assert hits == {"plus_harness": expected}
    assert 0 < sum(choice_hits(model, tokenizer, examples)) < len(examples)  # not all alike


def test_a_search_mixes_lm_eval_and_alloykit_tasks(
    spec_of, search_family, harness_folder: Path, tmp_path: Path
) -> None:
    spec = spec_of(
        tasks=["lm_eval:plus_harness", str(search_family["minus"])],
        lm_eval_include=str(harness_folder),
        fitness={"estimator": "irt", "subset": 0.2, "calibration": 1},
        trials=3,
    )
    result = run_search(spec, tmp_path / "out")
    assert set(result.test_scores) == {"plus_harness", "minus"}
    anchors = json.loads((tmp_path / "out" / "anchors.json").read_text())["responses"]
    assert all(len(r["plus_harness"]) == 30 for r in anchors.values())  # every validation doc
    model, tokenizer = load_model(search_family["base"], "cpu")
    examples = load_task(search_family["plus"]).examples("validation")
    base = next(name for name in anchors if "base" in name)
    assert anchors[base]["plus_harness"] == choice_hits(model, tokenizer, examples)


def test_a_missing_split_or_task_is_one_line(spec_of, harness_folder: Path, tmp_path) -> None:
    with pytest.raises(AlloyError, match=r"lm_eval:plus_harness has no 'train' split"):
        run_search(
            spec_of(
                tasks=["lm_eval:plus_harness"],
                lm_eval_include=str(harness_folder),
                fitness={"split": "train"},
            ),
            tmp_path / "a",
        )
    with pytest.raises(AlloyError, match="did you mean 'plus_harness'"):
        run_search(
            spec_of(tasks=["lm_eval:plus_harnes"], lm_eval_include=str(harness_folder)),
            tmp_path / "b",
        )


def test_a_score_that_is_not_right_or_wrong_is_refused(search_family, harness_folder) -> None:
    """A search's estimators count right answers: a per-document score such as a Brier
    score cannot be one."""
    definition = (harness_folder / "plus_harness.yaml").read_text()
    brier = definition.replace("task: plus_harness", "task: plus_brier").replace(
        "metric: acc", "metric: brier_score"
    )
    (harness_folder / "plus_brier.yaml").write_text(brier)
    model, tokenizer = load_model(search_family["ft1"], "cpu")
    with pytest.raises(AlloyError, match=r"brier_score.*not right \(1\) or wrong \(0\)"):
        HarnessTasks(harness_folder).hits(model, tokenizer, {"plus_brier": [0, 1]}, "validation")


def test_a_group_of_tasks_is_refused_with_its_first_member(search_family, harness_folder) -> None:
    """A search weighs its tasks one by one: a group (``group:`` YAML) must be spelt out."""
    (harness_folder / "both.yaml").write_text("group: both\ntask: [plus_harness]\n")
    with pytest.raises(AlloyError, match="lm_eval:both is a group of 1 lm-eval tasks") as error:
        HarnessTasks(harness_folder).task("both", "validation")
    assert "lm_eval:plus_harness" in str(error.value)
