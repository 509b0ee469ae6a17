"""Bad input through the real CLI: exit code 2, one readable line naming the culprit, no output.

Each test breaks one thing (a checkpoint, a recipe key, an option) and runs ``alloykit merge``;
most go through typer's in-process runner for speed, one through a real subprocess.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner, Result

from alloykit.api import merge_to_state_dict
from alloykit.cli import app
from alloykit.methods import contract as method_contract
from alloykit.methods import get_method

EMBED = "model.embed_tokens.weight"
HEAD = "lm_head.weight"
LATE = "model.layers.3.mlp.down_proj.weight"
EXTRA_ROWS = 8

Tensors = dict[str, torch.Tensor]


# -- building inputs -----------------------------------------------------------------------------


def variant(source: Path, directory: Path, edit: Callable[[Tensors], Tensors]) -> Path:
    """A copy of model ``source`` in ``directory`` whose tensors went through ``edit``."""
    shutil.copytree(source, directory)
    weights = directory / "model.safetensors"
    save_file(edit(load_file(weights)), weights, metadata={"format": "pt"})
    return directory


def with_extra_rows(tensors: Tensors) -> Tensors:
    """Grow the vocabulary: ``EXTRA_ROWS`` more rows in the embeddings and the output head."""
    grown = dict(tensors)
    generator = torch.Generator().manual_seed(0)
    for name in (EMBED, HEAD):
        extra = torch.randn(EXTRA_ROWS, tensors[name].shape[1], generator=generator)
        grown[name] = torch.cat([tensors[name], extra.to(tensors[name].dtype)])
    return grown


def pickled(source: Path, directory: Path, *, zip_format: bool = True) -> Path:
    """A copy of model ``source`` stored as ``pytorch_model.bin`` (torch.save of a state dict)."""
    directory.mkdir()
    shutil.copy(source / "config.json", directory / "config.json")
    torch.save(
        load_file(source / "model.safetensors"),
        directory / "pytorch_model.bin",
        _use_new_zipfile_serialization=zip_format,
    )
    return directory


def plain_pickle(payload: object, handle: BinaryIO) -> None:
    pickle.dump(payload, handle, protocol=2)


class RunsShellCommand:
    """Unpickling this runs a shell command: what a malicious checkpoint does."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Callable[[str], int], tuple[str]]:
        return os.system, (self.command,)


def ties_recipe(base: Path, *models: Path, **top_level: object) -> dict:
    return {
        "merge_method": "ties",
        "base_model": str(base),
        "models": [
            {"model": str(m), "parameters": {"weight": 0.5, "density": 0.5}} for m in models
        ],
        **top_level,
    }


def write_recipe(directory: Path, recipe: dict) -> Path:
    path = directory / "recipe.yml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


# -- running and checking ------------------------------------------------------------------------


def merge(recipe: Path, out: Path, *options: str) -> Result:
    return CliRunner().invoke(app, ["merge", str(recipe), str(out), *options])


def merge_in_subprocess(recipe: Path, out: Path, *options: str) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("alloykit")
    return subprocess.run(
        [str(script), "merge", str(recipe), str(out), *options],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


def partial(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def error_line(exit_code: int, stderr: str, expected_code: int = 2) -> str:
    """The single stderr line of a refused run; fails unless it is exactly one line."""
    assert exit_code == expected_code, stderr
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].strip()
    return lines[0]


def assert_refused(result: Result, out: Path, *culprits: str) -> str:
    """Exit code 2, one stderr line naming every culprit, and neither OUT nor OUT.partial."""
    line = error_line(result.exit_code, result.stderr)
    for culprit in culprits:
        assert culprit in line
    assert not out.exists()
    assert not partial(out).exists()
    return line


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path / "merged"


# -- broken checkpoints --------------------------------------------------------------------------


def test_corrupt_safetensors_header_names_the_file(llama, tmp_path, out):
    broken = variant(llama["ft1"], tmp_path / "corrupt", lambda t: t)
    weights = broken / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[8:24] = b"\x00garbage{{{{{{{{"
    weights.write_bytes(bytes(data))
    result = merge(write_recipe(tmp_path, ties_recipe(llama["base"], broken)), out)
    assert_refused(result, out, str(weights), "header")


def test_shape_mismatch_names_the_tensor(llama, tmp_path, out):
    def narrower(tensors: Tensors) -> Tensors:
        return {**tensors, LATE: tensors[LATE][:, :-1].contiguous()}

    broken = variant(llama["ft1"], tmp_path / "narrow", narrower)
    result = merge(write_recipe(tmp_path, ties_recipe(llama["base"], broken, llama["ft2"])), out)
    assert_refused(result, out, LATE, "shapes differ")


def test_tensor_missing_in_one_model_names_tensor_and_model(llama, tmp_path, out):
    broken = variant(
        llama["ft1"], tmp_path / "missing", lambda t: {k: v for k, v in t.items() if k != LATE}
    )
    result = merge(write_recipe(tmp_path, ties_recipe(llama["base"], broken, llama["ft2"])), out)
    assert_refused(result, out, LATE, str(broken), "missing")


@pytest.mark.parametrize("family", ["llama", "llama_bf16"])  # bfloat16 is read as stored
def test_nan_in_an_input_tensor_names_it_and_leaves_no_partial_output(
    family, request, tmp_path, out
):
    models = request.getfixturevalue(family)

    def poisoned(tensors: Tensors) -> Tensors:
        tensor = tensors[LATE].clone()
        tensor[-1, -1] = float("nan")
        return {**tensors, LATE: tensor}

    broken = variant(models["ft1"], tmp_path / "nan", poisoned)
    result = merge(write_recipe(tmp_path, ties_recipe(models["base"], broken, models["ft2"])), out)
    assert_refused(result, out, LATE, str(broken), "NaN")


def method_recipe(method: str, base: Path, *models: Path) -> dict:
    """A recipe of ``method`` over ``models``: weights, densities where it sparsifies, L1
    rescaling for DARE (a measuring pass before the merge), a base unless the method takes
    none."""
    parameters: dict = {} if method == "model_stock" else {"weight": 0.5}
    if method in ("ties", "dare_ties"):
        parameters["density"] = 0.5
    recipe: dict = {
        "merge_method": method,
        "models": [{"model": str(m), "parameters": parameters} for m in models],
    }
    if method == "dare_ties":
        recipe["parameters"] = {"rescale_mode": "l1"}
    if method != "linear":
        recipe["base_model"] = str(base)
    return recipe


@pytest.mark.parametrize(
    ("method", "poisoned_model", "value"),
    [
        ("linear", "ft2", float("nan")),
        ("task_arithmetic", "ft2", float("inf")),
        ("task_arithmetic", "base", float("nan")),
        ("ties", "base", float("-inf")),
        ("dare_ties", "ft1", float("nan")),
        ("dare_ties", "base", float("inf")),
        ("model_stock", "ft2", float("nan")),
        ("model_stock", "base", float("-inf")),
    ],
)
def test_a_non_finite_input_is_refused_by_every_fused_path(
    llama_bf16, tmp_path, out, method: str, poisoned_model: str, value: float
):
    """bfloat16 inputs read as stored reach the fused kernels unwidened (one pass or several):
    a bad value in any input, the base included, is found before any kernel can trim it
    away, and the error names the tensor and the model."""

    def poisoned(tensors: Tensors) -> Tensors:
        tensor = tensors[LATE].clone()
        tensor[-1, -1] = value
        return {**tensors, LATE: tensor}

    models = dict(llama_bf16)
    broken = variant(models[poisoned_model], tmp_path / "bad", poisoned)
    models[poisoned_model] = broken
    recipe = method_recipe(method, models["base"], models["ft1"], models["ft2"])
    result = merge(write_recipe(tmp_path, recipe), out)
    assert_refused(result, out, LATE, str(broken), "NaN" if value != value else "infinite")


def test_vocabulary_size_mismatch_without_common_rows_names_the_embeddings(llama, tmp_path, out):
    grown = variant(llama["ft1"], tmp_path / "grown", with_extra_rows)
    result = merge(write_recipe(tmp_path, ties_recipe(llama["base"], grown, llama["ft2"])), out)
    line = assert_refused(result, out, EMBED, "vocab")
    assert "common_rows" in line


def test_nonexistent_model_path_names_the_path(llama, tmp_path, out):
    nowhere = tmp_path / "no-such-model"
    result = merge(write_recipe(tmp_path, ties_recipe(llama["base"], nowhere, llama["ft1"])), out)
    assert_refused(result, out, str(nowhere), "not found")


# -- pickle checkpoints --------------------------------------------------------------------------


def test_pickle_checkpoint_without_allow_pickle_is_refused(llama, tmp_path, out):
    legacy = pickled(llama["ft1"], tmp_path / "legacy")
    result = merge(write_recipe(tmp_path, ties_recipe(llama["base"], legacy, llama["ft2"])), out)
    assert_refused(result, out, str(legacy / "pytorch_model.bin"), "--allow-pickle")


@pytest.mark.parametrize("save", [torch.save, plain_pickle], ids=["torch-save", "plain-pickle"])
def test_malicious_pickle_is_refused_even_with_allow_pickle_and_never_runs(
    llama, tmp_path, out, save
):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil"
    evil.mkdir()
    shutil.copy(llama["ft1"] / "config.json", evil / "config.json")
    payload = {EMBED: RunsShellCommand(f"touch {marker}")}
    with (evil / "pytorch_model.bin").open("wb") as handle:
        save(payload, handle)
    result = merge(
        write_recipe(tmp_path, ties_recipe(llama["base"], evil, llama["ft2"])),
        out,
        "--allow-pickle",
    )
    line = assert_refused(result, out, str(evil / "pytorch_model.bin"), "refused")
    assert "system" in line.split("refused", 1)[1]
    assert not marker.exists()


def test_malicious_pickle_never_runs_in_a_real_process(llama, tmp_path, out):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil"
    evil.mkdir()
    torch.save({EMBED: RunsShellCommand(f"touch {marker}")}, evil / "pytorch_model.bin")
    recipe = write_recipe(tmp_path, ties_recipe(llama["base"], evil, llama["ft2"]))
    done = merge_in_subprocess(recipe, out, "--allow-pickle")
    line = error_line(done.returncode, done.stderr)
    assert str(evil / "pytorch_model.bin") in line
    assert not marker.exists()
    assert not out.exists()


# -- recipes -------------------------------------------------------------------------------------


def test_unknown_method_names_the_method_and_key(llama, tmp_path, out):
    recipe = ties_recipe(llama["base"], llama["ft1"]) | {"merge_method": "tiez"}
    result = merge(write_recipe(tmp_path, recipe), out)
    line = assert_refused(result, out, "merge_method", "tiez")
    assert "ties" in line.split("tiez", 1)[1]


def test_unknown_parameter_names_its_key_path(llama, tmp_path, out):
    recipe = ties_recipe(llama["base"], llama["ft1"], llama["ft2"])
    recipe["models"][1]["parameters"]["densty"] = 0.5
    result = merge(write_recipe(tmp_path, recipe), out)
    assert_refused(result, out, "models[1].parameters.densty")


def test_out_of_range_density_names_its_key_path(llama, tmp_path, out):
    recipe = ties_recipe(llama["base"], llama["ft1"], llama["ft2"])
    recipe["models"][0]["parameters"]["density"] = 1.5
    result = merge(write_recipe(tmp_path, recipe), out)
    assert_refused(result, out, "models[0].parameters.density", "1.5")


def test_parameters_a_kernel_cannot_use_name_the_tensor_and_method(llama, tmp_path, out):
    recipe = ties_recipe(llama["base"], llama["ft1"], llama["ft2"])
    recipe["merge_method"] = "della"
    for model in recipe["models"]:
        model["parameters"] = {"density": 0.9, "epsilon": 0.3}
    result = merge(write_recipe(tmp_path, recipe), out)
    assert_refused(result, out, "della", "model.")


def test_missing_base_model_for_ties_names_base_model(llama, tmp_path, out):
    recipe = ties_recipe(llama["base"], llama["ft1"], llama["ft2"])
    del recipe["base_model"]
    result = merge(write_recipe(tmp_path, recipe), out)
    assert_refused(result, out, "base_model", "ties")


def test_yaml_syntax_error_names_file_and_line(tmp_path, out):
    recipe = tmp_path / "broken.yml"
    recipe.write_text("merge_method: ties\nmodels:\n  - model: [unclosed\n")
    result = merge(recipe, out)
    assert_refused(result, out, str(recipe), "line", "YAML")


def test_recipe_file_not_found_names_the_path(tmp_path, out):
    recipe = tmp_path / "no-such-recipe.yml"
    result = merge(recipe, out)
    assert_refused(result, out, str(recipe), "not found")


def test_union_tokenizer_of_models_without_tokenizer_files_is_refused(llama, tmp_path, out):
    recipe = ties_recipe(llama["base"], llama["ft1"], tokenizer_source="union")
    result = merge(write_recipe(tmp_path, recipe), out)
    assert_refused(result, out, "tokenizer_source", "union")


# -- options and the output directory -----------------------------------------------------------


def test_existing_non_empty_out_without_force_is_refused_and_kept(llama, tmp_path, out):
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = merge(write_recipe(tmp_path, ties_recipe(llama["base"], llama["ft1"])), out)
    line = error_line(result.exit_code, result.stderr)
    assert str(out) in line
    assert "--force" in line
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert not partial(out).exists()


def test_cuda_device_without_cuda_is_refused(llama, tmp_path, out, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    recipe = write_recipe(tmp_path, ties_recipe(llama["base"], llama["ft1"]))
    result = merge(recipe, out, "--device", "cuda")
    assert_refused(result, out, "--device", "cuda")


def test_unknown_device_is_refused(llama, tmp_path, out):
    recipe = write_recipe(tmp_path, ties_recipe(llama["base"], llama["ft1"]))
    result = merge(recipe, out, "--device", "gpu")
    assert_refused(result, out, "--device", "gpu")


def test_unknown_out_dtype_names_the_option(llama, tmp_path, out):
    recipe = write_recipe(tmp_path, ties_recipe(llama["base"], llama["ft1"]))
    result = merge(recipe, out, "--out-dtype", "float13")
    assert_refused(result, out, "--out-dtype", "float13")


# -- tracebacks ----------------------------------------------------------------------------------


def test_debug_shows_the_traceback_of_bad_input(tmp_path, out):
    result = merge(tmp_path / "no-such-recipe.yml", out, "--debug")
    assert result.exit_code == 2
    assert "Traceback" in result.stderr
    assert "recipe file not found" in result.stderr.splitlines()[-1]


def test_internal_error_exits_1_with_one_line_pointing_to_debug(llama, tmp_path, out, monkeypatch):
    def broken_kernel(*args: object, **kwargs: object) -> torch.Tensor:
        raise RuntimeError("kernel exploded")

    ties = method_contract.implementation(get_method("ties"))
    monkeypatch.setitem(
        method_contract._IMPLEMENTATIONS,
        "ties",
        dataclasses.replace(ties, kernel=broken_kernel, streaming=None),
    )
    result = merge(write_recipe(tmp_path, ties_recipe(llama["base"], llama["ft1"])), out)
    line = error_line(result.exit_code, result.stderr, expected_code=1)
    assert "--debug" in line
    assert "kernel exploded" in line
    assert not out.exists()


# -- the accepted counterparts -------------------------------------------------------------------


def test_common_rows_merges_a_model_with_a_larger_vocabulary_into_the_base_shape(
    llama, tmp_path, out
):
    grown = variant(llama["ft1"], tmp_path / "grown", with_extra_rows)
    recipe = write_recipe(tmp_path, ties_recipe(llama["base"], grown, llama["ft2"]))
    result = merge(recipe, out, "--vocab-mismatch", "common_rows")
    assert result.exit_code == 0, result.output
    merged = load_file(out / "model-00001-of-00001.safetensors")
    expected = merge_to_state_dict(ties_recipe(llama["base"], llama["ft1"], llama["ft2"]))
    for name in (EMBED, HEAD):
        assert merged[name].shape == load_file(llama["base"] / "model.safetensors")[name].shape
        torch.testing.assert_close(merged[name], expected[name])


def test_common_rows_takes_the_rows_beyond_the_shared_vocabulary_from_the_base(
    llama, tmp_path, out
):
    big_base = variant(llama["base"], tmp_path / "big-base", with_extra_rows)
    recipe = ties_recipe(big_base, llama["ft1"], llama["ft2"], vocab_mismatch="common_rows")
    result = merge(write_recipe(tmp_path, recipe), out)
    assert result.exit_code == 0, result.output
    merged = load_file(out / "model-00001-of-00001.safetensors")
    base = load_file(big_base / "model.safetensors")
    expected = merge_to_state_dict(ties_recipe(llama["base"], llama["ft1"], llama["ft2"]))
    for name in (EMBED, HEAD):
        assert merged[name].shape == base[name].shape
        shared = expected[name].shape[0]
        torch.testing.assert_close(merged[name][:shared], expected[name])
        torch.testing.assert_close(merged[name][shared:], base[name][shared:])


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_pickle_checkpoint_with_allow_pickle_merges_like_its_safetensors_twin(
    llama, tmp_path, out, zip_format
):
    legacy = pickled(llama["ft1"], tmp_path / "legacy", zip_format=zip_format)
    recipe = write_recipe(tmp_path, ties_recipe(llama["base"], legacy, llama["ft2"]))
    result = merge(recipe, out, "--allow-pickle")
    assert result.exit_code == 0, result.output
    merged = load_file(out / "model-00001-of-00001.safetensors")
    expected = merge_to_state_dict(ties_recipe(llama["base"], llama["ft1"], llama["ft2"]))
    assert merged.keys() == expected.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(merged[name], tensor)
