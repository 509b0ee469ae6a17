"""``modules:`` recipes on tiny vision-language models: each module merged with its own
method over its own tensors, every tensor in exactly one module, outputs that load."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

import alloykit
from alloykit.arch.layers import parse_layer_name
from alloykit.arch.modules import module_layout
from alloykit.cli import app
from alloykit.errors import PlanError
from alloykit.tiny_models import build_finetune, build_multimodal

KINDS = ("llava", "qwen2_vl", "mistral3")
WEIGHTS = (0.25, 0.75)
LAMBDA = 0.6
BASE_WEIGHT = 0.5


@pytest.fixture(scope="module")
def vlm(tmp_path_factory) -> dict[str, dict[str, Path]]:
    root = tmp_path_factory.mktemp("vlm")
    models = {}
    for kind in KINDS:
        base = build_multimodal(kind, root / kind / "base")
        models[kind] = {
            "base": base,
            "ft1": build_finetune(base, root / kind / "ft1", seed=1),
            "ft2": build_finetune(base, root / kind / "ft2", seed=2),
        }
    return models


def tensors(directory: Path) -> dict[str, torch.Tensor]:
    return {k: v for f in sorted(directory.glob("*.safetensors")) for k, v in load_file(f).items()}


def config_of(directory: Path) -> dict[str, Any]:
    return json.loads((directory / "config.json").read_text())


def loading_report(directory: Path) -> dict[str, list]:
    import transformers

    model_class = getattr(transformers, config_of(directory)["architectures"][0])
    _, report = model_class.from_pretrained(directory, output_loading_info=True)
    return {key: list(value) for key, value in report.items() if value}


def per_module_recipe(models: dict[str, Path]) -> dict[str, Any]:
    """Text decoder: linear (the unlisted base joins it with the top-level weight, as in
    mergekit); vision tower: task arithmetic; projector: ft2 alone."""
    ft1, ft2 = str(models["ft1"]), str(models["ft2"])
    return {
        "merge_method": "linear",
        "base_model": str(models["base"]),
        "dtype": "float32",
        "parameters": {"weight": BASE_WEIGHT},
        "modules": {
            "text_decoder": {
                "models": [
                    {"model": ft1, "parameters": {"weight": WEIGHTS[0]}},
                    {"model": ft2, "parameters": {"weight": WEIGHTS[1]}},
                ],
                "parameters": {"normalize": False},
            },
            "vision_tower": {
                "merge_method": "task_arithmetic",
                "models": [{"model": ft1, "parameters": {"weight": 1.0}}, ft2],
                "parameters": {"lambda": LAMBDA},
            },
            "multi_modal_projector": {"merge_method": "passthrough", "models": [ft2]},
        },
    }


def module_names(kind: str, names: list[str]) -> dict[str, str]:
    layout = module_layout(names)
    return {name: layout.module_of(name).name for name in names}


def expected_module(name: str) -> str:
    """Module membership written out by hand for the Llava and Qwen2-VL layouts."""
    if name.startswith("multi_modal_projector.") or name.startswith("visual.merger."):
        return "multi_modal_projector"
    if name.startswith(("vision_tower.", "visual.")):
        return "vision_tower"
    return "text_decoder"


@pytest.mark.parametrize("kind", KINDS)
def test_the_modules_partition_the_tensors(vlm, kind):
    names = list(tensors(vlm[kind]["base"]))
    layout = module_layout(names)
    assert layout.names == ["text_decoder", "multi_modal_projector", "vision_tower"]
    assert {name: layout.module_of(name).name for name in names} == {
        name: expected_module(name) for name in names
    }
    for module in layout.names:
        assert any(expected_module(name) == module for name in names)


def test_a_text_model_has_one_default_module():
    assert module_layout(
        ["model.embed_tokens.weight", "model.layers.0.mlp.up_proj.weight"]
    ).names == ["default"]


@pytest.mark.parametrize("kind", KINDS)
def test_each_module_is_merged_with_its_own_method(vlm, kind, tmp_path):
    models = vlm[kind]
    out = alloykit.merge(per_module_recipe(models), tmp_path / "out")
    base, ft1, ft2 = (tensors(models[k]) for k in ("base", "ft1", "ft2"))
    merged = tensors(out)
    owner = module_names(kind, list(base))
    assert set(merged) == set(base)
    for name, tensor in merged.items():
        if owner[name] == "text_decoder":
            want = WEIGHTS[0] * ft1[name] + WEIGHTS[1] * ft2[name] + BASE_WEIGHT * base[name]
        elif owner[name] == "vision_tower":
            want = base[name] + LAMBDA * (
                1.0 * (ft1[name] - base[name]) + BASE_WEIGHT * (ft2[name] - base[name])
            )
        else:
            want = ft2[name]
        torch.testing.assert_close(tensor, want, rtol=1e-5, atol=1e-6, msg=name)
    assert loading_report(out) == {}


@pytest.mark.parametrize("kind", KINDS)
def test_module_slices_renumber_each_module_config_and_load(vlm, kind, tmp_path):
    base, ft1 = str(vlm[kind]["base"]), str(vlm[kind]["ft1"])
    recipe = {
        "merge_method": "passthrough",
        "modules": {
            "text_decoder": {
                "slices": [
                    {"sources": [{"model": base, "layer_range": [0, 3]}]},
                    {"sources": [{"model": ft1, "layer_range": [1, 4]}]},
                ]
            },
            "vision_tower": {
                "slices": [
                    {"sources": [{"model": base, "layer_range": [0, 2]}]},
                    {"sources": [{"model": ft1, "layer_range": [1, 2]}]},
                ]
            },
            "multi_modal_projector": {"models": [base]},
        },
    }
    out = alloykit.merge(recipe, tmp_path / "out")
    config = config_of(out)
    assert config["text_config"]["num_hidden_layers"] == 6
    vision = config["vision_config"]
    assert vision.get("num_hidden_layers", vision.get("depth")) == 3
    merged, source = tensors(out), tensors(vlm[kind]["ft1"])
    # outside its blocks, a tower takes the first slice's model, and "post" tensors the last's
    base_tensors = tensors(vlm[kind]["base"])
    for name in merged:
        if expected_module(name) == "vision_tower" and parse_layer_name(name) is None:
            want = source[name] if "post" in name else base_tensors[name]
            torch.testing.assert_close(merged[name], want, msg=name)
    # the vision tower's third block is ft1's second
    third = [n for n in merged if expected_module(n) == "vision_tower" and ".2." in n]
    assert third
    for name in third:
        torch.testing.assert_close(merged[name], source[name.replace(".2.", ".1.", 1)])
    assert loading_report(out) == {}


@pytest.mark.parametrize("kind", KINDS)
def test_a_model_used_by_one_module_only_is_dropped_elsewhere_with_a_reason(vlm, kind):
    recipe = per_module_recipe(vlm[kind])
    the_plan = alloykit.plan(recipe)
    reasons = {d.reason for d in the_plan.dropped if d.model == str(vlm[kind]["ft1"])}
    assert reasons == {
        "module 'multi_modal_projector' does not take model " + repr(str(vlm[kind]["ft1"]))
    }


def test_a_misspelt_module_is_one_line_naming_the_modules(vlm, tmp_path):
    recipe = per_module_recipe(vlm["llava"])
    recipe["modules"]["vison_tower"] = recipe["modules"].pop("vision_tower")
    path = tmp_path / "recipe.yml"
    path.write_text(yaml.safe_dump(recipe))
    result = CliRunner().invoke(app, ["merge", str(path), str(tmp_path / "out")])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1
    assert "modules.vison_tower: model" in lines[0] and "has no module 'vison_tower'" in lines[0]
    assert "did you mean 'vision_tower'?" in lines[0]
    assert not (tmp_path / "out").exists()


def test_a_module_without_an_entry_is_refused(vlm):
    recipe = per_module_recipe(vlm["qwen2_vl"])
    del recipe["modules"]["multi_modal_projector"]
    with pytest.raises(PlanError) as caught:
        alloykit.plan(recipe)
    assert caught.value.message.startswith("modules: no entry for module 'multi_modal_projector'")


def test_a_modules_plan_is_made_again_rather_than_reparameterised(vlm):
    from alloykit.plan import PlanOptions
    from alloykit.planner import reparameterised
    from alloykit.recipe import load_recipe

    recipe = load_recipe(per_module_recipe(vlm["llava"]))
    the_plan = alloykit.plan(recipe)
    assert reparameterised(the_plan, recipe, PlanOptions()) is None


def test_dry_run_names_each_module_method(vlm, tmp_path):
    path = tmp_path / "recipe.yml"
    path.write_text(yaml.safe_dump(per_module_recipe(vlm["llava"])))  # keys sorted
    result = CliRunner().invoke(app, ["merge", str(path), str(tmp_path / "out"), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert (
        "modules multi_modal_projector (passthrough), text_decoder (linear), "
        "vision_tower (task_arithmetic)" in " ".join(result.stdout.split())
    )
