"""Bad input to ``alloykit lora``: exit code 2, one line naming the culprit, no output left."""

from __future__ import annotations

from pathlib import Path

import pytest
from lora_files import Tensors, variant
from typer.testing import CliRunner, Result

from alloykit.cli import app
from alloykit.lora import ExtractOptions, extract_adapter


def lora(*args: object) -> Result:
    return CliRunner().invoke(app, ["lora", *map(str, args)])


def refused(result: Result, out: Path) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert not out.exists() and not out.with_name(out.name + ".partial").exists()
    return lines[0]


def narrower_up_proj(tensors: Tensors) -> Tensors:
    changed = dict(tensors)
    name = "model.layers.2.mlp.up_proj.weight"
    changed[name] = tensors[name][:48].clone()
    return changed


def without_last_layer(tensors: Tensors) -> Tensors:
    return {k: v for k, v in tensors.items() if not k.startswith("model.layers.3.")}


def test_extract_refuses_a_model_of_another_shape(llama: dict[str, Path], tmp_path: Path):
    model = variant(llama["ft1"], tmp_path / "narrow", narrower_up_proj)
    out = tmp_path / "adapter"
    line = refused(
        lora("extract", out, "--model", model, "--base", llama["base"], "--rank", 4), out
    )
    assert line.startswith("error: tensor 'model.layers.2.mlp.up_proj.weight': shapes differ")
    assert "[48, 32]" in line and "[64, 32]" in line


def test_extract_refuses_a_rank_larger_than_a_matrix(llama: dict[str, Path], tmp_path: Path):
    out = tmp_path / "adapter"
    line = refused(
        lora("extract", out, "--model", llama["ft1"], "--base", llama["base"], "--rank", 20), out
    )
    assert "--rank 20 is larger than module 'model.layers.0.self_attn.k_proj' (16×32" in line


@pytest.mark.parametrize("option", ["--include", "--exclude"])
def test_extract_refuses_a_bad_regex(llama: dict[str, Path], tmp_path: Path, option: str):
    out = tmp_path / "adapter"
    args = ["--model", llama["ft1"], "--base", llama["base"], "--rank", 4, option, "mlp.(up"]
    line = refused(lora("extract", out, *args), out)
    assert line.startswith(f"error: {option}: invalid regular expression 'mlp.(up'")


def test_extract_needs_exactly_one_of_rank_and_energy(llama: dict[str, Path], tmp_path: Path):
    out = tmp_path / "adapter"
    line = refused(lora("extract", out, "--model", llama["ft1"], "--base", llama["base"]), out)
    assert "give exactly one of --rank or --energy" in line


def test_apply_refuses_an_adapter_for_another_base(llama: dict[str, Path], tmp_path: Path):
    extract_adapter(llama["ft1"], llama["base"], tmp_path / "adapter", ExtractOptions(rank=2))
    other = variant(llama["base"], tmp_path / "shallow", without_last_layer)
    out = tmp_path / "out"
    line = refused(lora("apply", out, "--base", other, "--adapter", tmp_path / "adapter"), out)
    assert "changes 'model.layers.3.mlp.down_proj.weight', which model" in line
    assert f"the adapter was made for '{llama['base']}'" in line


def test_apply_refuses_an_adapter_of_other_shapes(llama: dict[str, Path], tmp_path: Path):
    extract_adapter(llama["ft1"], llama["base"], tmp_path / "adapter", ExtractOptions(rank=2))
    other = variant(llama["base"], tmp_path / "narrow", narrower_up_proj)
    out = tmp_path / "out"
    line = refused(lora("apply", out, "--base", other, "--adapter", tmp_path / "adapter"), out)
    assert "changes 'model.layers.2.mlp.up_proj.weight' as [64, 32], but it is [48, 32]" in line


def test_merge_refuses_an_unknown_method_parameter(llama: dict[str, Path], tmp_path: Path):
    extract_adapter(llama["ft1"], llama["base"], tmp_path / "a", ExtractOptions(rank=2))
    out = tmp_path / "out"
    line = refused(lora("merge", tmp_path / "a", out, "--param", "density=0.5"), out)
    assert line.startswith("error: method 'linear' has no parameter 'density'")


def test_a_full_traceback_needs_debug(llama: dict[str, Path], tmp_path: Path):
    args = ["--model", llama["ft1"], "--base", llama["base"], "--rank", 4, "--include", "("]
    result = lora("extract", tmp_path / "adapter", *args, "--debug")
    assert result.exit_code == 2
    assert "Traceback" in result.stderr
