"""Upcycling one dense model into an MoE, with Drop-Upcycling's partial re-initialisation."""

from __future__ import annotations

import pytest
import torch
from moe_helpers import load_causal_lm, logits_of
from safetensors.torch import load_file
from typer.testing import CliRunner

from alloykit.cli import app
from alloykit.compose import build_moe, upcycle_recipe
from alloykit.compose.upcycling import neuron_subset, reinitialise

runner = CliRunner()
INTERMEDIATE = 64


def tensors(directory) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for shard in sorted(directory.glob("*.safetensors")):
        out.update(load_file(shard))
    return out


def changed_neurons(dense: torch.Tensor, expert: torch.Tensor, dim: int) -> set[int]:
    differs = (dense != expert).any(dim=1 - dim)
    return set(torch.nonzero(differs).flatten().tolist())


@pytest.fixture(scope="module")
def dropped(dense, tmp_path_factory):
    """Four experts upcycled from the llama base with half of each MLP re-drawn, seed 7."""
    recipe = upcycle_recipe(str(dense("llama")["base"]), 4, reinit_ratio=0.5, seed=7)
    return build_moe(recipe, tmp_path_factory.mktemp("drop") / "out")


def test_upcycling_through_the_cli_reproduces_the_dense_logits(dense, tmp_path):
    base = dense("llama")["base"]
    out = tmp_path / "out"
    result = runner.invoke(app, ["upcycle", str(base), str(out), "--num-experts", "4"])
    assert result.exit_code == 0, result.output
    moe, problems = load_causal_lm(out)
    assert problems == {}
    assert moe.config.num_local_experts == 4
    torch.testing.assert_close(logits_of(moe), logits_of(load_causal_lm(base)[0]))


@pytest.mark.parametrize(
    ("family", "architecture", "shared"),
    [("qwen2", "qwen2_moe", None), ("llama", "glm4_moe", 2), ("qwen3", "dots1", 1)],
)
def test_upcycling_with_shared_experts_keeps_the_dense_function(
    dense, family, architecture, shared, tmp_path
):
    base = dense(family)["base"]
    recipe = upcycle_recipe(
        str(base), 3, architecture=architecture, num_shared_experts=shared, gate_mode="random"
    )
    moe, problems = load_causal_lm(build_moe(recipe, tmp_path / "out"))
    assert problems == {}
    torch.testing.assert_close(logits_of(moe), logits_of(load_causal_lm(base)[0]))


def test_drop_upcycling_redraws_the_same_neurons_in_gate_up_and_down(dense, dropped):
    base = tensors(dense("llama")["base"])
    out = tensors(dropped)
    for layer in range(4):
        dense_mlp = f"model.layers.{layer}.mlp"
        for expert in range(4):
            prefix = f"model.layers.{layer}.block_sparse_moe.experts.{expert}"
            gate = changed_neurons(
                base[f"{dense_mlp}.gate_proj.weight"], out[f"{prefix}.w1.weight"], 0
            )
            up = changed_neurons(base[f"{dense_mlp}.up_proj.weight"], out[f"{prefix}.w3.weight"], 0)
            down = changed_neurons(
                base[f"{dense_mlp}.down_proj.weight"], out[f"{prefix}.w2.weight"], 1
            )
            assert len(gate) == INTERMEDIATE // 2
            assert gate == up == down


def test_drop_upcycling_gives_each_expert_its_own_neurons(dense, dropped):
    base = tensors(dense("llama")["base"])["model.layers.1.mlp.gate_proj.weight"]
    out = tensors(dropped)
    subsets = [
        frozenset(
            changed_neurons(base, out[f"model.layers.1.block_sparse_moe.experts.{e}.w1.weight"], 0)
        )
        for e in range(4)
    ]
    assert len(set(subsets)) == 4


def test_redrawn_weights_follow_the_original_matrix_statistics():
    original = torch.randn(512, 256) * 0.3 + 0.1
    neurons = neuron_subset(512, 0.5, torch.Generator().manual_seed(0))
    fresh = reinitialise(original, neurons, 0, torch.Generator().manual_seed(1))[neurons]
    assert abs(float(fresh.mean()) - float(original.mean())) < 0.01
    assert abs(float(fresh.std()) - float(original.std())) < 0.01


def test_drop_upcycling_is_reproducible_from_its_seed(dense, dropped, tmp_path):
    base = str(dense("llama")["base"])
    again = build_moe(upcycle_recipe(base, 4, reinit_ratio=0.5, seed=7), tmp_path / "same")
    other = build_moe(upcycle_recipe(base, 4, reinit_ratio=0.5, seed=8), tmp_path / "other")
    name = "model.layers.2.block_sparse_moe.experts.3.w2.weight"
    assert torch.equal(tensors(again)[name], tensors(dropped)[name])
    assert not torch.equal(tensors(other)[name], tensors(dropped)[name])


def test_upcycling_with_a_zero_ratio_copies_the_dense_mlp_exactly(dense, tmp_path):
    base = dense("llama")["base"]
    out = tensors(build_moe(upcycle_recipe(str(base), 2, reinit_ratio=0.0), tmp_path / "out"))
    dense_up = tensors(base)["model.layers.3.mlp.up_proj.weight"]
    assert torch.equal(out["model.layers.3.block_sparse_moe.experts.1.w3.weight"], dense_up)
