"""``evaluate()``: every task kind on a model directory or a loaded model, subsets, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from evaluate_harness import CHOICE_ROWS, GENERATION_ROWS, PERPLEXITY_TEXT, write_jsonl

from alloykit.errors import AlloyError, CheckpointError
from alloykit.evaluate import (
    TaskResult,
    choice_accuracy,
    evaluate,
    exact_match,
    load_task,
    perplexity,
)


def test_results_match_the_building_blocks(tiny_lm, tiny_lm_dir: Path, task_dirs) -> None:
    model, tokenizer = tiny_lm
    results = evaluate(tiny_lm_dir, [task_dirs[kind] for kind in task_dirs])
    expected = [
        ("count", "exact_match", exact_match(model, tokenizer, GENERATION_ROWS, max_new_tokens=32)),
        ("plus-one", "acc_norm", choice_accuracy(model, tokenizer, CHOICE_ROWS, normalize=True)),
        (
            "prose",
            "perplexity",
            perplexity(model, tokenizer, PERPLEXITY_TEXT, window=32, stride=16)[0],
        ),
    ]
    assert [(r.task, r.metric) for r in results] == [(name, metric) for name, metric, _ in expected]
    for result, (_, _, score) in zip(results, expected, strict=True):
        assert result.score == pytest.approx(score, rel=1e-6)
    assert [r.n for r in results[:2]] == [len(GENERATION_ROWS), len(CHOICE_ROWS)]
    assert all(r.split == "test" and r.seconds >= 0 for r in results)


def test_loaded_model_with_its_tokenizer(tiny_lm, task_dirs) -> None:
    model, tokenizer = tiny_lm
    [result] = evaluate(model, task_dirs["multiple_choice"], tokenizer=tokenizer, limit=4)
    assert result.score == choice_accuracy(model, tokenizer, CHOICE_ROWS[:4], normalize=True)
    assert result.n == 4


def test_loaded_model_finds_its_tokenizer_by_name(tiny_lm, task_dirs) -> None:
    model, _ = tiny_lm
    [result] = evaluate(model, load_task(task_dirs["generation"]), split="validation")
    assert (result.split, result.n) == ("validation", 5)


def test_seeded_subset_is_the_same_every_time(tiny_lm, task_dirs) -> None:
    model, tokenizer = tiny_lm
    runs = [
        evaluate(model, task_dirs["multiple_choice"], tokenizer=tokenizer, limit=5, subset_seed=1)
        for _ in range(2)
    ]
    assert runs[0][0].score == runs[1][0].score and runs[0][0].n == 5


def test_perplexity_limit_counts_windows(tiny_lm, task_dirs) -> None:
    model, tokenizer = tiny_lm
    [one] = evaluate(model, task_dirs["perplexity"], tokenizer=tokenizer, limit=1)
    assert one.n == 31  # the first 32-token window scores all but its first token


def test_progress_reaches_the_total(tiny_lm, task_dirs) -> None:
    model, tokenizer = tiny_lm
    seen: list[tuple[str, int, int]] = []
    evaluate(
        model,
        task_dirs["multiple_choice"],
        tokenizer=tokenizer,
        batch_size=8,
        on_progress=lambda *report: seen.append(report),
    )
    pairs = sum(len(row["choices"]) for row in CHOICE_ROWS)
    assert seen[-1] == ("plus-one", pairs, pairs)
    assert len(seen) == -(-pairs // 8)


def test_evaluation_leaves_training_mode_as_it_was(tiny_lm, task_dirs) -> None:
    model, tokenizer = tiny_lm
    model.train()
    try:
        evaluate(model, task_dirs["generation"], tokenizer=tokenizer, limit=2)
        assert model.training
    finally:
        model.eval()


def test_half_precision_checkpoint_runs_in_float32_on_cpu(tmp_path: Path, tiny_lm_dir) -> None:
    from evaluate_harness import build_char_tokenizer

    from alloykit.evaluate import load_model
    from alloykit.tiny_models import build_model

    build_model("llama", tmp_path, dtype=torch.bfloat16)
    build_char_tokenizer(tmp_path)
    model, _ = load_model(tmp_path)
    assert model.dtype == torch.float32


def test_missing_model_directory_is_a_checkpoint_error(tmp_path: Path, task_dirs) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        evaluate(tmp_path / "nowhere", task_dirs["generation"])


def test_model_without_tokenizer_is_a_checkpoint_error(tmp_path: Path, task_dirs) -> None:
    from alloykit.tiny_models import build_model

    build_model("llama", tmp_path)
    with pytest.raises(CheckpointError, match="cannot load a tokenizer"):
        evaluate(tmp_path, task_dirs["generation"])


def test_loaded_model_without_a_tokenizer_source_is_an_error(tiny_lm, task_dirs) -> None:
    model, _ = tiny_lm
    name = model.name_or_path
    model.name_or_path = ""
    try:
        with pytest.raises(AlloyError, match="pass tokenizer="):
            evaluate(model, task_dirs["generation"])
    finally:
        model.name_or_path = name


def test_result_is_plain_data(tiny_lm, task_dirs) -> None:
    model, tokenizer = tiny_lm
    [result] = evaluate(model, task_dirs["generation"], tokenizer=tokenizer, limit=1)
    assert isinstance(result, TaskResult)
    assert set(result.to_dict()) == {"task", "type", "metric", "score", "n", "split", "seconds"}


def test_bad_data_in_any_task_fails_before_the_model_runs(tiny_lm, task_dirs, tmp_path) -> None:
    model, tokenizer = tiny_lm
    write_jsonl(tmp_path / "test.jsonl", [{"prompt": "no answer"}])
    calls = []
    handle = model.register_forward_hook(lambda *args: calls.append(1))
    try:
        with pytest.raises(AlloyError, match=r"test\.jsonl:1: missing 'answer'"):
            evaluate(model, [task_dirs["generation"], tmp_path], tokenizer=tokenizer)
    finally:
        handle.remove()
    assert calls == []
