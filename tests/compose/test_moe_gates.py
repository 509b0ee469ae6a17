"""Router initialisation: hidden states, cheap embeddings and seeded random gates."""

from __future__ import annotations

import pytest
import torch
from moe_helpers import load_causal_lm

from alloykit.compose import build_moe, moe_plan

SKILLS = {
    "ft1": ["add: 1 + 2 =", "add: 40 + 7 =", "add: 3 + 95 ="],
    "ft2": ["zzz qqq zzz", "qqq zzz qqq zzz", "zz qq zz qq"],
}


def recipe(models, mode: str = "hidden", **extra) -> dict:
    return {
        "base_model": str(models["base"]),
        "gate_mode": mode,
        "experts_per_token": 1,
        "experts": [
            {"source_model": str(models[name]), "positive_prompts": prompts}
            for name, prompts in SKILLS.items()
        ],
        **extra,
    }


def router_inputs(base_dir, prompts: list[str], model=None) -> torch.Tensor:
    """Mean over the prompts' tokens (BOS left out) of each layer's post-attention norm output,
    in the base model (or ``model``, with the base's tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    if model is None:
        model = AutoModelForCausalLM.from_pretrained(base_dir).eval()
    states: list[torch.Tensor] = []
    for layer in model.model.layers:
        layer.post_attention_layernorm.register_forward_hook(
            lambda _m, _a, output: states.append(output[0, 1:])
        )
    with torch.no_grad():
        for prompt in prompts:
            model(**tokenizer(prompt, return_tensors="pt"))
    layers = len(model.model.layers)
    per_layer = [torch.cat(states[i::layers]) for i in range(layers)]
    return torch.stack([s.mean(0) for s in per_layer])


def test_hidden_gates_are_the_normalised_mean_router_input_of_the_prompts(dense):
    models = dense("llama")
    plan = moe_plan(recipe(models))
    expected = router_inputs(models["base"], SKILLS["ft1"])
    expected = expected / expected.norm(dim=-1, keepdim=True)
    for layer in range(len(expected)):
        gate = plan.gates[f"model.layers.{layer}.block_sparse_moe.gate.weight"]
        torch.testing.assert_close(gate[0], expected[layer], rtol=1e-4, atol=1e-5)


def test_hidden_expert_gates_run_the_prompts_through_the_experts_mlps(dense):
    from transformers import AutoModelForCausalLM

    models = dense("llama")
    plan = moe_plan(recipe(models, "hidden_expert"))
    hidden = moe_plan(recipe(models, "hidden"))
    hybrid = AutoModelForCausalLM.from_pretrained(models["base"]).eval()  # base + ft1's MLPs
    expert = AutoModelForCausalLM.from_pretrained(models["ft1"])
    for mine, theirs in zip(hybrid.model.layers, expert.model.layers, strict=True):
        mine.mlp.load_state_dict(theirs.mlp.state_dict())
    expected = router_inputs(models["base"], SKILLS["ft1"], hybrid)
    expected = expected / expected.norm(dim=-1, keepdim=True)
    first = "model.layers.0.block_sparse_moe.gate.weight"
    torch.testing.assert_close(plan.gates[first], hidden.gates[first])  # nothing routed yet
    for layer in range(len(expected)):
        gate = plan.gates[f"model.layers.{layer}.block_sparse_moe.gate.weight"]
        torch.testing.assert_close(gate[0], expected[layer], rtol=1e-4, atol=1e-5)
    last = f"model.layers.{len(expected) - 1}.block_sparse_moe.gate.weight"
    assert not torch.allclose(plan.gates[last], hidden.gates[last])


def test_negative_prompts_are_subtracted_before_normalising(dense):
    models = dense("llama")
    with_negative = recipe(models)
    with_negative["experts"][0]["negative_prompts"] = SKILLS["ft2"]
    plan = moe_plan(with_negative)
    expected = router_inputs(models["base"], SKILLS["ft1"]) - router_inputs(
        models["base"], SKILLS["ft2"]
    )
    gate = plan.gates["model.layers.2.block_sparse_moe.gate.weight"][0]
    torch.testing.assert_close(gate, expected[2] / expected[2].norm(), rtol=1e-4, atol=1e-5)


def test_hidden_gates_route_each_experts_own_prompts_to_it(dense, tmp_path):
    models = dense("llama")
    model, _ = load_causal_lm(build_moe(recipe(models), tmp_path / "out"))
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(models["base"])
    for expert, prompts in enumerate(SKILLS.values()):
        for prompt in prompts:
            batch = tokenizer(prompt, return_tensors="pt")
            with torch.no_grad():
                routers = model(**batch, output_router_logits=True).router_logits
            probabilities = routers[0][1:].softmax(-1).mean(0)  # layer 0, BOS left out
            assert int(probabilities.argmax()) == expert, prompt


def test_cheap_embed_gates_are_the_normalised_mean_token_embedding(dense):
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    models = dense("llama")
    plan = moe_plan(recipe(models, "cheap_embed"))
    table = load_file(models["base"] / "model.safetensors")["model.embed_tokens.weight"]
    tokenizer = AutoTokenizer.from_pretrained(models["base"])
    ids = [i for p in SKILLS["ft2"] for i in tokenizer(p, add_special_tokens=False)["input_ids"]]
    mean = table[ids].mean(0)
    for layer in range(4):
        gate = plan.gates[f"model.layers.{layer}.block_sparse_moe.gate.weight"][1]
        torch.testing.assert_close(gate, mean / mean.norm(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["random", "uniform_random"])
def test_random_gates_depend_only_on_the_seed(dense, mode):
    models = dense("llama")

    def gates(seed: int) -> torch.Tensor:
        plan = moe_plan(recipe(models, mode, seed=seed))
        return torch.stack([plan.gates[n] for n in sorted(plan.gates)])

    assert torch.equal(gates(1), gates(1))
    assert not torch.equal(gates(1), gates(2))


def test_uniform_random_gates_stay_within_a_fresh_linear_layers_range(dense):
    plan = moe_plan(recipe(dense("llama"), "uniform_random"))
    bound = 1 / 32**0.5  # hidden size 32
    assert all(bool((g.abs() <= bound).all()) for g in plan.gates.values())


def test_experts_with_the_same_prompts_get_a_degenerate_gate_warning(dense):
    models = dense("llama")
    same = recipe(models)
    same["experts"][1]["positive_prompts"] = SKILLS["ft1"]
    warnings = moe_plan(same).warnings
    assert any(
        "experts[0] and experts[1] have nearly the same router weights" in w for w in warnings
    )
    assert not any("nearly the same" in w for w in moe_plan(recipe(models)).warnings)


def test_qwen_shared_expert_without_prompts_gets_a_zero_gate(dense):
    models = dense("qwen2")
    plan = moe_plan(recipe(models, architecture="qwen2_moe", shared_experts=[str(models["base"])]))
    gate = plan.gates["model.layers.0.mlp.shared_expert_gate.weight"]
    assert gate.shape == (1, 32)
    assert not bool(gate.any())
