"""mergekit-yaml's flags on ``alloykit merge``: same meaning, or accepted as unnecessary."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import typer
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner, Result

from alloykit.api import parse_size
from alloykit.cli.app import app

# mergekit-yaml's options (mergekit/options.py, MergeOptions plus its click declarations).
MERGEKIT_FLAGS = (
    "--allow-crimes",
    "--no-allow-crimes",
    "--transformers-cache",
    "--lora-merge-cache",
    "--lora-merge-dtype",
    "--cuda",
    "--no-cuda",
    "--device",
    "--low-cpu-memory",
    "--no-low-cpu-memory",
    "--out-shard-size",
    "--copy-tokenizer",
    "--no-copy-tokenizer",
    "--clone-tensors",
    "--no-clone-tensors",
    "--trust-remote-code",
    "--no-trust-remote-code",
    "--random-seed",
    "--lazy-unpickle",
    "--no-lazy-unpickle",
    "--write-model-card",
    "--no-write-model-card",
    "--safe-serialization",
    "--no-safe-serialization",
    "-v",
    "--quiet",
    "--read-to-gpu",
    "--no-read-to-gpu",
    "--multi-gpu",
    "--no-multi-gpu",
    "--num-threads",
    "-j",
    "--gpu-rich",
    "--async-write",
    "--no-async-write",
    "--write-threads",
)


def linear_recipe(tmp_path: Path, *models: Path, **top_level: object) -> Path:
    recipe = {
        "merge_method": "linear",
        "models": [{"model": str(m), "parameters": {"weight": 1.0}} for m in models],
        **top_level,
    }
    path = tmp_path / "recipe.yml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def tensors(directory: Path) -> dict[str, torch.Tensor]:
    return {k: v for f in sorted(directory.glob("*.safetensors")) for k, v in load_file(f).items()}


@pytest.fixture
def with_tokenizer(llama, tmp_path) -> Path:
    """The tiny llama ft1 with a tokenizer config (the tiny models carry none)."""
    model = tmp_path / "ft1-tok"
    shutil.copytree(llama["ft1"], model)
    (model / "tokenizer_config.json").write_text('{"model_max_length": 64}')
    return model


def run(*arguments: str) -> Result:
    return CliRunner().invoke(app, ["merge", *arguments])


def merge_command_options() -> set[str]:
    command = typer.main.get_command(app).commands["merge"]  # type: ignore[attr-defined]
    return {name for param in command.params for name in (*param.opts, *param.secondary_opts)}


def test_every_mergekit_yaml_flag_is_an_option_of_merge():
    missing = [flag for flag in MERGEKIT_FLAGS if flag not in merge_command_options()]
    assert missing == []


def test_every_mergekit_yaml_flag_is_listed_in_the_docs():
    page = (Path(__file__).resolve().parents[2] / "docs" / "mergekit.md").read_text()
    missing = [flag for flag in MERGEKIT_FLAGS if f"`{flag}" not in page]
    assert missing == []


def test_unnecessary_flags_leave_the_merged_tensors_unchanged(llama, tmp_path):
    recipe = linear_recipe(tmp_path, llama["ft1"], llama["ft2"])
    plain = run(str(recipe), str(tmp_path / "plain"))
    assert plain.exit_code == 0, plain.output
    flagged = run(
        str(recipe),
        str(tmp_path / "flagged"),
        "--lazy-unpickle",
        "--allow-crimes",
        "--low-cpu-memory",
        "--read-to-gpu",
        "--clone-tensors",
        "--async-write",
        "--write-threads",
        "2",
        "--safe-serialization",
        "--no-trust-remote-code",
        "--lora-merge-dtype",
        "bfloat16",
        "-j",
        "1",
        "--out-shard-size",
        "5B",
    )
    assert flagged.exit_code == 0, flagged.output
    expected = tensors(tmp_path / "plain")
    got = tensors(tmp_path / "flagged")
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[name], got[name]) for name in expected)


def test_no_copy_tokenizer_and_no_model_card_leave_those_files_out(llama, tmp_path, with_tokenizer):
    recipe = linear_recipe(tmp_path, with_tokenizer, llama["ft2"])
    result = run(str(recipe), str(tmp_path / "out"), "--no-copy-tokenizer", "--no-write-model-card")
    assert result.exit_code == 0, result.output
    written = {path.name for path in (tmp_path / "out").iterdir()}
    assert "README.md" not in written
    assert not written & {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"}
    assert "config.json" in written


def test_copy_tokenizer_and_model_card_are_the_defaults(llama, tmp_path, with_tokenizer):
    recipe = linear_recipe(tmp_path, with_tokenizer, llama["ft2"])
    result = run(str(recipe), str(tmp_path / "out"), "--copy-tokenizer", "--write-model-card")
    assert result.exit_code == 0, result.output
    written = {path.name for path in (tmp_path / "out").iterdir()}
    assert {"README.md", "tokenizer_config.json"} <= written


def test_no_copy_tokenizer_with_a_chat_template_warns_that_it_is_not_written(llama, tmp_path):
    recipe = linear_recipe(
        tmp_path, llama["ft1"], llama["ft2"], chat_template="{{ messages[0]['content'] }}"
    )
    result = run(str(recipe), str(tmp_path / "out"), "--no-copy-tokenizer")
    assert result.exit_code == 0, result.output
    assert "chat_template is not written" in result.stdout
    assert not (tmp_path / "out" / "chat_template.jinja").exists()


def test_random_seed_is_the_seed(llama, tmp_path):
    recipe = linear_recipe(tmp_path, llama["ft1"], llama["ft2"])
    result = run(str(recipe), "--dry-run", "--random-seed", "1234")
    assert result.exit_code == 0, result.output
    assert "seed 1234" in result.stdout


def test_cuda_asks_for_the_cuda_device(llama, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    recipe = linear_recipe(tmp_path, llama["ft1"], llama["ft2"])
    for flag in ("--cuda", "--gpu-rich"):
        result = run(str(recipe), str(tmp_path / "out"), flag)
        assert result.exit_code == 2
        assert "cuda" in result.stderr


def test_device_auto_falls_back_to_the_cpu_without_cuda(llama, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    recipe = linear_recipe(tmp_path, llama["ft1"], llama["ft2"])
    result = run(str(recipe), "--dry-run", "--device", "auto")
    assert result.exit_code == 0, result.output


def test_trust_remote_code_says_alloykit_never_runs_remote_code(llama, tmp_path):
    recipe = linear_recipe(tmp_path, llama["ft1"], llama["ft2"])
    result = run(str(recipe), "--dry-run", "--trust-remote-code", "--no-safe-serialization")
    assert result.exit_code == 0, result.output
    assert "never runs a model repository's code" in result.stdout
    assert "the output is safetensors" in result.stdout


def test_quiet_prints_no_notes_and_no_summary(llama, tmp_path):
    recipe = linear_recipe(tmp_path, llama["ft1"], llama["ft2"])
    result = run(str(recipe), str(tmp_path / "out"), "--quiet", "--trust-remote-code")
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert tensors(tmp_path / "out")


def test_verbose_prints_the_plan_before_merging(llama, tmp_path):
    recipe = linear_recipe(tmp_path, llama["ft1"], llama["ft2"])
    result = run(str(recipe), str(tmp_path / "out"), "-v")
    assert result.exit_code == 0, result.output
    assert "output tensors" in result.stdout
    assert "wrote" in result.stdout


def test_transformers_cache_is_where_hub_ids_are_looked_up(llama, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    cache = tmp_path / "hub"
    revision = "0" * 40
    snapshot = cache / "models--tiny--llama-ft1" / "snapshots" / revision
    shutil.copytree(llama["ft1"], snapshot)
    (cache / "models--tiny--llama-ft1" / "refs").mkdir()
    (cache / "models--tiny--llama-ft1" / "refs" / "main").write_text(revision)
    recipe = linear_recipe(tmp_path, Path("tiny/llama-ft1"), llama["ft2"])
    assert run(str(recipe), "--dry-run").exit_code == 2
    result = run(str(recipe), "--dry-run", "--transformers-cache", str(cache))
    assert result.exit_code == 0, result.output
    assert str(snapshot) in result.stdout


@pytest.mark.parametrize(
    ("text", "expected"),
    [("5B", 5 * 10**9), ("1b", 10**9), ("500M", 5 * 10**8), ("20KB", 20_000), ("5GB", 5 * 10**9)],
)
def test_sizes_read_mergekit_billions_and_byte_units(text, expected):
    assert parse_size(text) == expected
