"""Every supported (dense family → MoE format) combination: loads, runs, has transformers' layout,
and reproduces the dense model exactly when all experts are that model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from moe_helpers import load_causal_lm, logits_of
from safetensors import safe_open

from alloykit.compose import build_moe, moe_plan

# (dense family, architecture, shared experts)
COMBINATIONS = [
    ("llama", "mixtral", 0),
    ("mistral", "mixtral", 0),
    ("llama", "qwen2_moe", 1),
    ("mistral", "qwen2_moe", 1),
    ("qwen2", "qwen2_moe", 1),
    ("qwen3", "qwen3_moe", 0),
    ("llama", "glm4_moe", 1),
    ("mistral", "glm4_moe", 1),
    ("qwen2", "glm4_moe", 1),
    ("qwen3", "dots1", 1),
]
IDS = [f"{family}-to-{arch}" for family, arch, _ in COMBINATIONS]
FORMATS = [  # one dense family per output format
    ("llama", "mixtral", 0),
    ("qwen2", "qwen2_moe", 1),
    ("qwen3", "qwen3_moe", 0),
    ("llama", "glm4_moe", 1),
    ("qwen3", "dots1", 1),
]
FORMAT_IDS = [arch for _, arch, _ in FORMATS]
PROMPTS = {
    "ft1": ["add: 1 + 2 =", "add: 40 + 7 ="],
    "ft2": ["reverse: a b c =", "reverse: x y ="],
    "base": ["note: hello =", "item: x ="],
}


def distinct_recipe(models: dict[str, Path], architecture: str, shared: int) -> dict:
    def expert(name: str) -> dict:
        return {"source_model": str(models[name]), "positive_prompts": PROMPTS[name]}

    recipe = {
        "base_model": str(models["base"]),
        "architecture": architecture,
        "gate_mode": "hidden",
        "experts_per_token": 2,
        "experts": [expert("ft1"), expert("ft2")],
    }
    if shared:
        entry = {"source_model": str(models["base"])}
        if architecture == "qwen2_moe":
            entry["positive_prompts"] = PROMPTS["base"]
        recipe["shared_experts"] = [entry]
    return recipe


def identical_recipe(model: Path, architecture: str, shared: int) -> dict:
    """Three copies of ``model``; with a shared expert, outputs scaled so they sum to the MLP."""
    gated = architecture == "qwen2_moe"  # a zero gate passes half of the shared expert
    routed_scale = 0.5 if shared else 1.0
    recipe = {
        "base_model": str(model),
        "architecture": architecture,
        "gate_mode": "random",
        "experts_per_token": 2,
        "experts": [{"source_model": str(model), "residual_scale": routed_scale}] * 3,
    }
    if shared:
        shared_scale = 1.0 if gated else 0.5
        recipe["shared_experts"] = [{"source_model": str(model), "residual_scale": shared_scale}]
    return recipe


@pytest.fixture(scope="module")
def built(dense, tmp_path_factory):
    """``built(family, architecture, shared)`` → the MoE of two distinct fine-tunes."""
    cache: dict[tuple, Path] = {}

    def get(family: str, architecture: str, shared: int) -> Path:
        key = (family, architecture, shared)
        if key not in cache:
            out = tmp_path_factory.mktemp("moe") / "out"
            cache[key] = build_moe(distinct_recipe(dense(family), architecture, shared), out)
        return cache[key]

    return get


def saved_layout(directory: Path) -> dict[str, list[int]]:
    layout = {}
    for shard in directory.glob("*.safetensors"):
        with safe_open(shard, "pt") as handle:
            for name in handle.keys():  # noqa: SIM118 (safe_open is not a mapping)
                layout[name] = handle.get_slice(name).get_shape()
    return layout


@pytest.mark.parametrize(("family", "architecture", "shared"), FORMATS, ids=FORMAT_IDS)
def test_moe_of_distinct_experts_loads_and_gives_finite_logits(built, family, architecture, shared):
    model, problems = load_causal_lm(built(family, architecture, shared))
    assert problems == {}
    assert model.config.model_type == architecture
    logits = logits_of(model)
    assert logits.shape[-1] == model.config.vocab_size
    assert bool(torch.isfinite(logits).all())


@pytest.mark.parametrize(("family", "architecture", "shared"), FORMATS, ids=FORMAT_IDS)
def test_tensors_are_named_and_shaped_as_transformers_saves_them(
    built, family, architecture, shared, tmp_path
):
    from transformers import AutoConfig, AutoModelForCausalLM

    out = built(family, architecture, shared)
    reference = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(out))
    reference.save_pretrained(tmp_path)
    assert saved_layout(out) == saved_layout(tmp_path)


@pytest.mark.parametrize(("family", "architecture", "shared"), COMBINATIONS, ids=IDS)
def test_moe_of_identical_experts_reproduces_the_dense_logits(
    dense, family, architecture, shared, tmp_path
):
    model_dir = dense(family)["ft1"]
    out = build_moe(identical_recipe(model_dir, architecture, shared), tmp_path / "out")
    moe, problems = load_causal_lm(out)
    dense_model, _ = load_causal_lm(model_dir)
    assert problems == {}
    assert moe.config.model_type == architecture
    torch.testing.assert_close(logits_of(moe), logits_of(dense_model), rtol=1e-5, atol=1e-5)


def test_config_routes_to_the_number_of_experts_asked_for(built):
    config = json.loads((built("llama", "mixtral", 0) / "config.json").read_text())
    assert (config["num_local_experts"], config["num_experts_per_tok"]) == (2, 2)
    assert config["architectures"] == ["MixtralForCausalLM"]


@pytest.mark.parametrize(
    ("family", "architecture", "shared", "prompted_shared", "chosen"),
    [
        ("llama", None, 0, False, "mixtral"),
        ("llama", None, 1, False, "glm4_moe"),
        ("llama", None, 1, True, "qwen2_moe"),
        ("qwen3", None, 0, False, "qwen3_moe"),
        ("qwen3", "qwen", 0, False, "qwen3_moe"),
        ("qwen2", "Qwen MoE", 1, False, "qwen2_moe"),
        ("qwen3", "DeepSeek", 1, False, "dots1"),
    ],
)
def test_architecture_is_chosen_as_mergekit_chooses_it(
    dense, family, architecture, shared, prompted_shared, chosen
):
    models = dense(family)
    recipe = {
        "base_model": str(models["base"]),
        "gate_mode": "random",
        "experts": [str(models["ft1"]), str(models["ft2"])],
    }
    if architecture:
        recipe["architecture"] = architecture
    if shared:
        prompts = {"positive_prompts": ["x"]} if prompted_shared else {}
        recipe["shared_experts"] = [{"source_model": str(models["base"]), **prompts}]
    assert moe_plan(recipe).layout.format.model_type == chosen
