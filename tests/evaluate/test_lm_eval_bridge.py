"""The lm-evaluation-harness bridge on a local task definition: no downloads, same scores.

Skipped unless lm-eval is installed (``pip install "alloykit[lm-eval]"``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from evaluate_harness import CHOICE_ROWS, write_jsonl

from alloykit.errors import AlloyError
from alloykit.evaluate import choice_accuracy

pytest.importorskip("lm_eval")

from alloykit.evaluate.lm_eval_bridge import run_lm_eval

TASK_YAML = """\
task: plus_one
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{prompt}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
target_delimiter: ""
metric_list:
  - metric: acc
  - metric: acc_norm
"""


@pytest.fixture(scope="module")
def lm_eval_tasks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("lm-eval-tasks")
    data = write_jsonl(directory / "plus_one.jsonl", CHOICE_ROWS)
    (directory / "plus_one.yaml").write_text(TASK_YAML.format(data=data))
    return directory


def test_local_multiple_choice_task_scores_as_alloykit_does(
    tiny_lm, lm_eval_tasks: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    model, tokenizer = tiny_lm
    results = run_lm_eval(
        model, ["plus_one"], tokenizer=tokenizer, include_path=lm_eval_tasks, batch_size=8
    )
    scores = {result.metric: result for result in results}
    assert set(scores) == {"acc", "acc_norm"}
    for metric, normalize in (("acc", False), ("acc_norm", True)):
        ours = choice_accuracy(model, tokenizer, CHOICE_ROWS, normalize=normalize)
        assert scores[metric].score == pytest.approx(ours)
        assert (scores[metric].task, scores[metric].n) == ("plus_one", len(CHOICE_ROWS))


def test_unknown_task_name_is_an_error(tiny_lm, lm_eval_tasks: Path) -> None:
    model, tokenizer = tiny_lm
    with pytest.raises(AlloyError, match="did you mean 'plus_one'"):
        run_lm_eval(model, ["plus_on"], tokenizer=tokenizer, include_path=lm_eval_tasks)
