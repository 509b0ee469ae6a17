"""Task definitions: the three ways to point at a task, their defaults, and every bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
from evaluate_harness import CHOICE_ROWS, GENERATION_ROWS, write_jsonl

from alloykit.evaluate import TaskError, load_task, select


def test_a_directory_of_jsonl_splits_is_a_generation_task(task_dirs) -> None:
    task = load_task(task_dirs["generation"])
    assert (task.name, task.type, task.metric, task.max_new_tokens) == (
        "count",
        "generation",
        "exact_match",
        32,
    )
    assert sorted(task.splits) == ["test", "validation"]
    assert task.examples("test") == GENERATION_ROWS


def test_a_task_yaml_and_its_directory_are_the_same_task(task_dirs) -> None:
    directory = task_dirs["multiple_choice"]
    assert load_task(directory) == load_task(directory / "task.yaml")
    task = load_task(directory)
    assert (task.name, task.type, task.metric) == ("plus-one", "multiple_choice", "acc_norm")
    assert task.examples("test") == CHOICE_ROWS


def test_task_yaml_settings_are_kept(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "rev" / "val.jsonl", GENERATION_ROWS)
    (tmp_path / "rev" / "task.yaml").write_text(
        "name: reverse\ntype: generation\ndata: {validation: val.jsonl}\nmax_new_tokens: 16\n"
    )
    task = load_task(tmp_path / "rev")
    assert (task.name, task.max_new_tokens) == ("reverse", 16)
    assert task.splits == {"validation": tmp_path / "rev" / "val.jsonl"}


def test_task_yaml_without_data_finds_the_jsonl_splits(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "t" / "test.jsonl", CHOICE_ROWS)
    (tmp_path / "t" / "task.yaml").write_text("type: multiple_choice\n")
    task = load_task(tmp_path / "t")
    assert (task.name, task.metric, list(task.splits)) == ("t", "acc", ["test"])


def test_perplexity_task_reads_text(task_dirs) -> None:
    task = load_task(task_dirs["perplexity"])
    assert (task.type, task.metric, task.window, task.stride) == (
        "perplexity",
        "perplexity",
        32,
        16,
    )
    assert task.text("test").startswith("the quick brown fox")


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("name: x\ntpye: generation\n", "unknown key 'tpye'"),
        ("type: ranking\n", "type:"),
        ("type: generation\nmetric: acc\n", "metric 'acc' does not fit a generation task"),
        ("data: {test: missing.jsonl}\n", "data.test: file"),
        ("max_new_tokens: 0\n", "max_new_tokens"),
        ("- just\n- a list\n", "must be a mapping"),
        ("name: [unclosed\n", "task.yaml:"),
        ("type: perplexity\n", "needs data:"),
    ],
)
def test_bad_task_yaml_is_a_one_line_error(tmp_path: Path, yaml_text: str, message: str) -> None:
    write_jsonl(tmp_path / "test.jsonl", GENERATION_ROWS)
    (tmp_path / "task.yaml").write_text(yaml_text)
    with pytest.raises(TaskError, match=r"task\.yaml") as caught:
        load_task(tmp_path)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_task_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(TaskError, match="not found"):
        load_task(tmp_path / "nowhere")


def test_directory_without_splits_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(TaskError, match=r"no task\.yaml and no train/validation/test"):
        load_task(tmp_path)


def test_missing_split_names_the_splits_there_are(task_dirs) -> None:
    with pytest.raises(TaskError, match=r"no 'train' split \(it has: test, validation\)"):
        load_task(task_dirs["generation"]).examples("train")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"prompt": "a", "answer": "b"', "malformed JSON"),
        ('["prompt", "answer"]', "string 'prompt'"),
        ('{"prompt": "a"}', "missing 'answer'"),
        ('{"prompt": "a", "answer": ["b"]}', "'answer' must be a string"),
    ],
)
def test_malformed_generation_line_names_file_and_line(
    tmp_path: Path, line: str, message: str
) -> None:
    path = write_jsonl(tmp_path / "test.jsonl", GENERATION_ROWS[:2])
    path.write_text(path.read_text() + "\n" + line + "\n")
    with pytest.raises(TaskError, match=message) as caught:
        load_task(tmp_path).examples("test")
    assert f"{path}:4:" in str(caught.value)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"prompt": "a", "choices": [" b"], "answer": 0}, "at least two"),
        ({"prompt": "a", "choices": [" b", ""], "answer": 0}, "non-empty string"),
        (
            {"prompt": "a", "choices": [" b", " c"], "answer": 2},
            r"index of the right choice \(0 to 1\)",
        ),
        ({"prompt": "a", "choices": [" b", " c"], "answer": " b"}, "index of the right choice"),
    ],
)
def test_malformed_choice_line_names_file_and_line(tmp_path: Path, row: dict, message: str) -> None:
    write_jsonl(tmp_path / "test.jsonl", [*CHOICE_ROWS[:2], row])
    (tmp_path / "task.yaml").write_text("type: multiple_choice\n")
    with pytest.raises(TaskError, match=message) as caught:
        load_task(tmp_path).examples("test")
    assert f"{tmp_path / 'test.jsonl'}:3:" in str(caught.value)


def test_limit_takes_the_first_items() -> None:
    assert select(list(range(10)), 3) == [0, 1, 2]
    assert select(list(range(10)), None) == list(range(10))
    assert select(list(range(10)), 50) == list(range(10))


def test_seeded_subset_is_deterministic_ordered_and_seed_dependent() -> None:
    items = list(range(100))
    subset = select(items, 10, seed=7)
    assert subset == select(items, 10, seed=7)
    assert subset == sorted(subset) and len(set(subset)) == 10
    assert subset != select(items, 10, seed=8)
    assert subset != items[:10]


def test_limit_below_one_is_an_error() -> None:
    with pytest.raises(TaskError, match="--limit"):
        select([1, 2], 0)


def test_task_yaml_without_data_or_splits_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "task.yaml").write_text("type: generation\n")
    with pytest.raises(TaskError, match=r"no data: and no train/validation/test \.jsonl beside it"):
        load_task(tmp_path)
