"""Every dtype combination merges to the right values on every path: input dtype x compute
dtype x output dtype x method x path (torch with the kernels off, the fused kernels, the
torch-free raw path), against a float64 merge of the same values.

The inputs are multiples of 1/64 below 4 in magnitude, which float32, bfloat16 and float16 all
hold exactly (and so do their differences), so every input dtype gives the merge the same
values and the same magnitude ranking; what differs is the rounding of the compute and output
dtypes, which the tolerance allows for. A float32 chunk read as bfloat16 (the crash of issue
20) gives garbage or NaN, far outside it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import alloykit
from alloykit import native

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
PATHS = ("torch", "fused", "raw")
METHODS: dict[str, dict] = {
    "linear": {"models": ("ft1", "ft2"), "weight": (0.3, 0.7)},
    "task_arithmetic": {"models": ("ft1", "ft2"), "base": True, "weight": (0.5, 0.8)},
    "ties": {"models": ("ft1", "ft2"), "base": True, "weight": (1.0, 0.5), "density": 0.5},
    "dare_ties": {"models": ("ft1", "ft2"), "base": True, "weight": (1.0, 0.5), "density": 0.5},
    "model_stock": {"models": ("ft1", "ft2"), "base": True},
    "slerp": {"models": ("base", "ft1"), "base": True, "t": 0.3},
}
"""TIES and DARE's weights and rescaling (1 / density) are powers of two: the weighted task
vectors are exact in every dtype, so their sign votes are too (a rounded near-tie could flip)."""
SHAPES = {"model.layers.0.mlp.down_proj.weight": (24, 45), "model.norm.weight": (45,)}
"""A matrix of 1080 values (two blocks of the kernels' 512 and a tail) and a vector."""
EPSILON = {torch.float32: 2.0**-23, torch.bfloat16: 2.0**-8, torch.float16: 2.0**-10}

pytestmark = pytest.mark.skipif(
    not native.available() and os.environ.get("ALLOYKIT_REQUIRE_NATIVE") != "1",
    reason="alloykit's C kernels are not built here (no C compiler at install time)",
)


def _exact_values(generator: torch.Generator, shape: tuple[int, ...], high: int) -> torch.Tensor:
    """Multiples of 1/64 in (-high/64, high/64): exact in every dtype of the matrix."""
    return torch.randint(-high + 1, high, shape, generator=generator).double() / 64


@pytest.fixture(scope="module")
def values() -> dict[str, dict[str, torch.Tensor]]:
    """The base and two fine-tunes, as float64."""
    generator = torch.Generator().manual_seed(20)
    models: dict[str, dict[str, torch.Tensor]] = {"base": {}, "ft1": {}, "ft2": {}}
    for name, shape in SHAPES.items():
        base = _exact_values(generator, shape, 160)
        models["base"][name] = base
        for model in ("ft1", "ft2"):
            models[model][name] = base + _exact_values(generator, shape, 90)
    return models


@pytest.fixture(scope="module")
def stored(tmp_path_factory, values) -> dict[str, dict[str, Path]]:
    """``stored[input dtype][model]``: the values saved as one safetensors file per model."""
    root = tmp_path_factory.mktemp("dtype-matrix")
    files: dict[str, dict[str, Path]] = {}
    for dtype_name, dtype in DTYPES.items():
        files[dtype_name] = {}
        for model, tensors in values.items():
            path = root / f"{model}-{dtype_name}.safetensors"
            save_file({n: t.to(dtype).contiguous() for n, t in tensors.items()}, str(path))
            files[dtype_name][model] = path
    return files


def _recipe(method: str, files: dict[str, Path]) -> dict:
    case = METHODS[method]
    models = []
    for m, model in enumerate(case["models"]):
        parameters = {"weight": case["weight"][m]} if "weight" in case else {}
        if "density" in case:
            parameters["density"] = case["density"]
        models.append({"model": str(files[model]), "parameters": parameters})
    recipe: dict = {"merge_method": method, "models": models, "seed": 7}
    if case.get("base"):
        recipe["base_model"] = str(files["base"])
    if "t" in case:
        recipe["parameters"] = {"t": case["t"]}
    return recipe


def _merge(recipe: dict, *, compute: str, out: str, path: str) -> dict[str, torch.Tensor]:
    off = native.turned_off() if path == "torch" else contextlib.nullcontext()
    with off:
        return alloykit.merge_to_state_dict(
            recipe, dtype=compute, out_dtype=out, raw_path=path == "raw",
            chunk_elements=500, threads=1,
        )  # fmt: skip


@pytest.fixture(scope="module")
def references(stored) -> dict[str, dict[str, torch.Tensor]]:
    """Each method's merge in float64 (the torch path: the kernels compute in float32)."""
    return {
        method: _merge(_recipe(method, stored["float32"]), compute="float64", out="float64",
                       path="torch")
        for method in METHODS
    }  # fmt: skip


def _cases() -> list[tuple[str, str, str, str]]:
    """The raw path runs bfloat16 inputs in float32 only: elsewhere it is the fused path again."""
    cases = []
    for path in PATHS:
        for given in DTYPES:
            for compute in DTYPES:
                if path == "raw" and (given, compute) != ("bfloat16", "float32"):
                    continue
                for out in DTYPES:
                    cases.append((path, given, compute, out))
    return cases


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("path", "given", "compute", "out"), _cases())
def test_merge_matches_float64_reference(stored, references, method, path, given, compute, out):
    merged = _merge(_recipe(method, stored[given]), compute=compute, out=out, path=path)
    coarsest = max(EPSILON[DTYPES[compute]], EPSILON[DTYPES[out]])
    for name, reference in references[method].items():
        assert merged[name].dtype == DTYPES[out]
        # a few roundings of values below 4 (plus slerp's trigonometry in float32 at best)
        tolerance = 16 * coarsest * 4 + 1e-6
        error = (merged[name].double() - reference).abs().max().item()
        assert error <= tolerance, f"{name}: max error {error} > {tolerance}"


@pytest.mark.parametrize(
    ("dtypes", "written"),
    [
        (("float32", "bfloat16", "bfloat16"), torch.float32),
        (("bfloat16", "float32", "bfloat16"), torch.float32),
        (("bfloat16", "bfloat16", "float16"), torch.float32),
        (("float16", "float16", "float16"), torch.float16),
    ],
)
def test_mixed_inputs_are_written_in_the_widest_dtype(stored, references, dtypes, written):
    """As mergekit writes them (torch's type promotion): bfloat16 with float32 is float32."""
    models = zip(("base", "ft1", "ft2"), dtypes, strict=True)
    files = {model: stored[d][model] for model, d in models}
    merged = alloykit.merge_to_state_dict(_recipe("task_arithmetic", files))
    for name, reference in references["task_arithmetic"].items():
        assert merged[name].dtype == written
        tolerance = 16 * EPSILON[written] * 4 + 1e-6
        assert (merged[name].double() - reference).abs().max().item() <= tolerance


@pytest.mark.parametrize("threads", ["1", "2"])
def test_bfloat16_compute_of_float32_checkpoints_through_the_cli(llama, tmp_path, threads):
    """Issue 20's report: this command crashed (segfault, double free, or a false NaN)."""
    import yaml
    from typer.testing import CliRunner

    from alloykit.cli import app

    recipe = {
        "merge_method": "linear",
        "models": [{"model": str(llama[f"ft{i}"]), "parameters": {"weight": 0.5}} for i in (1, 2)],
    }
    path = tmp_path / "recipe.yml"
    path.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "out"
    command = ["merge", str(path), str(out), "--dtype", "bfloat16", "--threads", threads]
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 0, result.output
    expected = alloykit.merge_to_state_dict(recipe, dtype="bfloat16")
    merged = {k: v for shard in out.glob("*.safetensors") for k, v in load_file(shard).items()}
    assert all(torch.equal(merged[name], tensor) for name, tensor in expected.items())
