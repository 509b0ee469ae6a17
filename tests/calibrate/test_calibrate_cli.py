"""``alloykit calibrate``: writes the statistics file; bad input is one line and exit 2."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml
from typer.testing import CliRunner, Result

from alloykit.calibrate import read_info
from alloykit.cli.app import app
from alloykit.tiny_models import build_model


def test_calibrate_writes_the_statistics_file(tmp_path, zoo_base, zoo_task) -> None:
    out = tmp_path / "stats.safetensors"
    result = CliRunner().invoke(
        app,
        [
            *("calibrate", str(zoo_base), "--data", str(zoo_task), "--out", str(out)),
            *("--samples", "4", "--kinds", "gram", "--threads", "1"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert f"wrote {out} (gram; 4 examples" in result.output
    assert read_info(out).kinds == ("gram",)


def test_missing_data_exits_2_with_one_line(tmp_path, zoo_base) -> None:
    result = CliRunner().invoke(
        app,
        [
            *("calibrate", str(zoo_base), "--data", str(tmp_path / "nope.jsonl")),
            *("--out", str(tmp_path / "s.safetensors")),
        ],
    )
    assert result.exit_code == 2
    assert "calibration data" in result.output and "not found" in result.output
    assert "Traceback" not in result.output


def calibrate_cli(model: Path, data: Path, out: Path) -> Result:
    return CliRunner().invoke(
        app,
        [
            *("calibrate", str(model), "--data", str(data), "--out", str(out)),
            *("--samples", "4", "--threads", "1"),
        ],
    )


def refused(result: Result, *culprits: str) -> str:
    """Exit code 2 and one stderr line naming every culprit, no traceback."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for culprit in culprits:
        assert culprit in lines[0], lines[0]
    return lines[0]


def with_zoo_tokenizer(model: Path, zoo_base: Path) -> Path:
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(zoo_base / name, model / name)
    return model


def test_empty_data_exits_2_with_one_line(tmp_path, zoo_base) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    line = refused(calibrate_cli(zoo_base, empty, tmp_path / "s.safetensors"), str(empty))
    assert "holds no examples" in line


def test_a_model_whose_weights_the_hooks_cannot_map_exits_2_naming_a_tensor(
    tmp_path, zoo_base, zoo_task
) -> None:
    gpt2 = build_model("gpt2", tmp_path / "gpt2", bos_token_id=0, eos_token_id=0)
    result = calibrate_cli(with_zoo_tokenizer(gpt2, zoo_base), zoo_task, tmp_path / "s.st")
    line = refused(result, "transformer.h.0.attn.c_attn.weight", "Conv1D")
    assert "--kinds fisher" in line


def test_a_model_that_is_not_a_causal_language_model_exits_2(tmp_path, zoo_base, zoo_task):
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.for_model(
        "distilbert", dim=16, hidden_dim=32, n_layers=1, n_heads=2, vocab_size=700
    )
    encoder = tmp_path / "distilbert"
    AutoModel.from_config(config).save_pretrained(encoder)
    result = calibrate_cli(with_zoo_tokenizer(encoder, zoo_base), zoo_task, tmp_path / "s.st")
    refused(result, str(encoder), "cannot load a causal language model")


def test_a_tokenizer_past_the_models_vocabulary_exits_2(tmp_path, zoo_base, zoo_task) -> None:
    small = build_model("llama", tmp_path / "llama", vocab_size=8)  # the zoo's ids reach 640
    result = calibrate_cli(with_zoo_tokenizer(small, zoo_base), zoo_task, tmp_path / "s.st")
    refused(result, str(small), "past the 8 rows of the model's input embeddings")


def test_merging_with_statistics_of_another_model_exits_2_naming_both(
    tmp_path, zoo_base, zoo_task
) -> None:
    experts = zoo_base.parent / "experts"
    sort_stats = tmp_path / "sort.safetensors"
    assert calibrate_cli(experts / "sort", zoo_task, sort_stats).exit_code == 0
    recipe = tmp_path / "recipe.yml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "merge_method": "regmean",
                "models": [
                    {"model": str(experts / "sort"), "statistics": str(sort_stats)},
                    {"model": str(experts / "lower"), "statistics": str(sort_stats)},
                ],
            }
        )
    )
    result = CliRunner().invoke(app, ["merge", str(recipe), str(tmp_path / "out")])
    refused(result, "models[1].statistics", str(sort_stats), "other weights")
    assert not (tmp_path / "out").exists()
