"""`alloykit moe` through the CLI: dry run, atomic output, model card, and bad input.

Bad input exits with code 2 and one line naming the recipe key, and leaves neither OUT nor
OUT.partial behind.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from moe_helpers import write_recipe
from safetensors.torch import load_file
from typer.testing import CliRunner

from alloykit.cli import app

runner = CliRunner()
ATTENTION = "model.layers.1.self_attn.q_proj.weight"


def expert(model: Path, *prompts: str) -> dict:
    return {"source_model": str(model), "positive_prompts": list(prompts) or ["add: 1 + 2 ="]}


def good_recipe(models: dict[str, Path]) -> dict:
    return {
        "base_model": str(models["base"]),
        "gate_mode": "hidden",
        "experts_per_token": 2,
        "experts": [expert(models["ft1"], "add: 1 + 2 ="), expert(models["ft2"], "sort: 3 1 =")],
    }


def run(tmp_path: Path, recipe: dict, *args: str):
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["moe", str(write_recipe(tmp_path / "moe.yml", recipe)), str(out), *args]
    )
    return result, out


def weights(directory: Path) -> dict[str, torch.Tensor]:
    return {k: v for shard in directory.glob("*.safetensors") for k, v in load_file(shard).items()}


def test_moe_writes_the_model_atomically_with_a_card(dense, tmp_path):
    result, out = run(tmp_path, good_recipe(dense("llama")))
    assert result.exit_code == 0, result.output
    assert "wrote" in result.stdout
    assert not out.with_name("out.partial").exists()
    card = (out / "README.md").read_text()
    assert "MoE, Mixtral (mixtral): 2 experts" in card
    assert "positive_prompts" in card  # the recipe, for provenance
    assert (out / "tokenizer.json").exists()


def test_dry_run_prints_the_plan_and_writes_nothing(dense, tmp_path):
    result, out = run(tmp_path, good_recipe(dense("llama")), "--dry-run")
    assert result.exit_code == 0, result.output
    assert "Mixtral (mixtral): 2 experts, top-2" in result.stdout
    assert "block_sparse_moe.experts.1.w2.weight" in result.stdout
    assert "(router weights)" in result.stdout
    assert not out.exists()


def test_non_expert_tensors_come_from_the_base_by_default(dense, tmp_path):
    models = dense("llama")
    result, out = run(tmp_path, good_recipe(models))
    assert result.exit_code == 0, result.output
    assert torch.equal(weights(out)[ATTENTION], weights(models["base"])[ATTENTION])


def test_shared_tensors_can_be_merged_with_a_catalog_method(dense, tmp_path):
    models = dense("llama")
    recipe = good_recipe(models) | {"shared_tensors": {"merge_method": "linear"}}
    result, out = run(tmp_path, recipe)
    assert result.exit_code == 0, result.output
    average = (weights(models["ft1"])[ATTENTION] + weights(models["ft2"])[ATTENTION]) / 2
    torch.testing.assert_close(weights(out)[ATTENTION], average)


def test_shared_tensor_parameters_are_resolved_like_a_merge_recipe(dense, tmp_path):
    shared = {"merge_method": "ties", "parameters": {"density": [1.0, 0.2], "weight": 1.0}}
    result, _ = run(tmp_path, good_recipe(dense("llama")) | {"shared_tensors": shared}, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "method ties" in result.stdout
    assert "density=[0.2, 0.2]" in result.stdout  # the last layer's value of the gradient


def bad_cases(models: dict[str, Path], other: dict[str, Path], gpt2: dict[str, Path]):
    good = good_recipe(models)
    return {
        "expert architectures differ": (
            good | {"experts": [expert(models["ft1"]), expert(other["ft1"])]},
            "experts[1].source_model: model",
        ),
        "prompts missing for hidden gates": (
            good | {"experts": [expert(models["ft1"]), {"source_model": str(models["ft2"])}]},
            "experts[1].positive_prompts: gate_mode hidden needs positive prompts",
        ),
        "Qwen2-MoE from GPT-2 experts": (
            {
                "base_model": str(gpt2["base"]),
                "architecture": "qwen2_moe",
                "gate_mode": "random",
                "experts": [str(gpt2["ft1"]), str(gpt2["ft2"])],
                "shared_experts": [str(gpt2["base"])],
            },
            "architecture: cannot build it: Qwen MoE takes llama, mistral, qwen2 experts, not gpt2",
        ),
        "no format for GPT-2": (
            {
                "base_model": str(gpt2["base"]),
                "gate_mode": "random",
                "experts": [str(gpt2["ft1"]), str(gpt2["ft2"])],
            },
            "no MoE architecture can be built from gpt2 models",
        ),
        "shared expert for Mixtral": (
            good | {"architecture": "mixtral", "shared_experts": [str(models["base"])]},
            "Mixtral has no shared experts",
        ),
        "unknown architecture": (good | {"architecture": "switch"}, "unknown MoE architecture"),
        "too many experts per token": (
            good | {"experts_per_token": 3},
            "experts_per_token: 3 is more than the number of experts (2)",
        ),
        "typo in a key": (good | {"gate_mod": "random"}, "did you mean 'gate_mode'"),
        "unknown gate mode": (good | {"gate_mode": "learned"}, "gate_mode"),
        "experts and num_experts": (good | {"num_experts": 4}, "give either experts:"),
        "bad shared-tensor method": (
            good | {"shared_tensors": {"merge_method": "tise"}},
            "shared_tensors.merge_method: unknown merge method 'tise'",
        ),
        "re-init ratio above 1": (good | {"reinit_ratio": 1.5}, "reinit_ratio: expected a number"),
        "missing expert model": (
            good | {"experts": [expert(models["ft1"]), expert(models["base"] / "nope")]},
            "not found",
        ),
    }


BAD_CASES = [
    "expert architectures differ",
    "prompts missing for hidden gates",
    "Qwen2-MoE from GPT-2 experts",
    "no format for GPT-2",
    "shared expert for Mixtral",
    "unknown architecture",
    "too many experts per token",
    "typo in a key",
    "unknown gate mode",
    "experts and num_experts",
    "bad shared-tensor method",
    "re-init ratio above 1",
    "missing expert model",
]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_gives_one_line_exit_code_2_and_no_output(dense, tmp_path, case):
    recipe, expected = bad_cases(dense("llama"), dense("qwen2"), dense("gpt2"))[case]
    result, out = run(tmp_path, recipe)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:")
    assert expected in lines[0]
    assert str(tmp_path / "moe.yml") in lines[0] or "not found" in expected
    assert not out.exists()
    assert not out.with_name("out.partial").exists()


def test_existing_output_is_refused_before_any_work(dense, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    result, out = run(tmp_path, good_recipe(dense("llama")))
    assert result.exit_code == 2
    assert "already exists" in result.stderr
    assert (out / "keep.txt").read_text() == "mine"


def test_plan_fingerprint_is_stable_and_covers_the_router_weights(dense):
    from alloykit.compose import moe_plan

    recipe = good_recipe(dense("llama"))
    plan = moe_plan(recipe)
    assert plan.fingerprint() == moe_plan(recipe).fingerprint()  # a rerun resumes
    before = plan.fingerprint()
    plan.gates["model.layers.0.block_sparse_moe.gate.weight"][0, 0] += 1
    assert plan.fingerprint() != before
