"""Calibration records the statistics the agreed file format defines, computed here directly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from alloykit.calibrate import (
    CalibrationDataError,
    StatisticsError,
    calibrate,
    fingerprint,
    load_examples,
    read_info,
)
from alloykit.checkpoint.source import open_source

TEXTS = ["sort: 3 1 2 = 1 2 3", "reverse: a b c = c b a", "largest: 4 9 1 = 9"]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def read_all(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118


def test_gram_is_the_token_average_of_the_layers_inputs(tmp_path, zoo_base, zoo_model) -> None:
    data = write_jsonl(tmp_path / "texts.jsonl", [{"text": t} for t in TEXTS])
    out = calibrate(zoo_base, data, tmp_path / "s.safetensors", kinds=["gram"], batch_size=2)
    model, tokenizer = zoo_model
    # lm_head reads the final hidden states: one example at a time, so no padding at all.
    total, tokens = torch.zeros(128, 128), 0
    with torch.no_grad():
        for text in TEXTS:
            ids = torch.tensor([tokenizer(text)["input_ids"]])
            hidden = model.model(input_ids=ids).last_hidden_state[0]
            total += hidden.T @ hidden
            tokens += hidden.shape[0]
    stats = read_all(out)
    torch.testing.assert_close(stats["gram:lm_head.weight"], total / tokens, rtol=1e-4, atol=1e-5)
    assert read_info(out).tokens == tokens


def test_every_linear_weight_gets_a_gram_and_nothing_else_does(tmp_path, zoo_base) -> None:
    data = write_jsonl(tmp_path / "texts.jsonl", [{"text": t} for t in TEXTS])
    stats = read_all(calibrate(zoo_base, data, tmp_path / "s.safetensors", kinds=["gram"]))
    grams = {key.removeprefix("gram:") for key in stats}
    assert "model.layers.0.self_attn.q_proj.weight" in grams
    assert "model.layers.3.mlp.down_proj.weight" in grams
    assert stats["gram:model.layers.3.mlp.down_proj.weight"].shape == (384, 384)
    assert not any("norm" in name or "embed" in name for name in grams)
    assert len(grams) == 4 * 7 + 1


def test_fisher_is_the_mean_squared_gradient_of_each_answers_log_likelihood(
    tmp_path, zoo_base, zoo_model
) -> None:
    rows = [
        {"prompt": "sort: 3 1 2 =", "answer": "1 2 3"},
        {"prompt": "sort: 9 0 =", "answer": "0 9"},
    ]
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    out = calibrate(zoo_base, data, tmp_path / "s.safetensors", kinds=["fisher"])
    model, tokenizer = zoo_model
    names = ["model.layers.1.mlp.up_proj.weight", "model.norm.weight"]
    params = dict(model.named_parameters())
    expected = {name: torch.zeros_like(params[name]) for name in names}
    for row in rows:
        prompt = tokenizer(row["prompt"])["input_ids"]
        answer = tokenizer(" " + row["answer"], add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt + answer])
        labels = torch.tensor([[-100] * len(prompt) + answer])
        model.zero_grad()
        # HF's loss is the mean negative log-likelihood over the labelled tokens.
        (model(input_ids=ids, labels=labels).loss * len(answer)).backward()
        for name in names:
            expected[name] += params[name].grad ** 2 / len(rows)
    model.zero_grad()
    stats = read_all(out)
    for name in names:
        torch.testing.assert_close(stats[f"fisher:{name}"], expected[name], rtol=1e-4, atol=1e-10)
    assert len([k for k in stats if k.startswith("fisher:")]) == len(params)


def test_metadata_names_the_model_data_and_settings(tmp_path, zoo_base, zoo_task) -> None:
    out = calibrate(zoo_base, zoo_task, tmp_path / "s.safetensors", samples=5, seed=7)
    info = read_info(out)
    assert info.fingerprint == fingerprint(open_source(str(zoo_base)))
    assert (info.kinds, info.samples, info.seed) == (("gram", "fisher"), 5, 7)
    assert info.data.startswith("task sort (train), 5 of ")
    assert info.tokens > 5


def test_examples_are_a_seeded_subset_of_the_train_split(zoo_task) -> None:
    first = load_examples(zoo_task, 10, seed=1)
    assert first == load_examples(zoo_task, 10, seed=1)
    assert first.examples != load_examples(zoo_task, 10, seed=2).examples
    assert first.files == (zoo_task / "train.jsonl",)
    assert first.examples[0].target.startswith(" ")


def test_missing_data_is_one_clear_error(tmp_path, zoo_base) -> None:
    with pytest.raises(CalibrationDataError, match="not found"):
        calibrate(zoo_base, tmp_path / "none.jsonl", tmp_path / "s.safetensors")


def test_empty_data_is_one_clear_error(tmp_path, zoo_base) -> None:
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(CalibrationDataError, match="holds no examples"):
        calibrate(zoo_base, tmp_path / "empty.jsonl", tmp_path / "s.safetensors")


def test_a_line_without_text_or_prompt_names_its_line(tmp_path) -> None:
    data = write_jsonl(tmp_path / "bad.jsonl", [{"text": "ok"}, {"question": "?"}])
    with pytest.raises(CalibrationDataError, match=r"bad\.jsonl:2"):
        load_examples(data, 4, 0)


def test_unknown_kind_is_refused(tmp_path, zoo_base) -> None:
    data = write_jsonl(tmp_path / "texts.jsonl", [{"text": "x"}])
    with pytest.raises(StatisticsError, match="unknown statistics kind hessian"):
        calibrate(zoo_base, data, tmp_path / "s.safetensors", kinds=["hessian"])


def test_a_file_that_is_not_statistics_is_refused(zoo_base) -> None:
    with pytest.raises(StatisticsError, match="not an alloykit statistics file"):
        read_info(zoo_base / "model.safetensors")
