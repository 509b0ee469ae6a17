"""Router check on the example zoo: hidden gates send each skill's held-out prompts to its expert.

The zoo (examples/zoo, built by ``python examples/zoo/build.py``) holds a base model, one
fine-tuned expert per skill and ``tasks/<skill>/{train,test}.jsonl``. An MoE with one expert
per skill gets ``hidden`` gates from a few training prompts per skill; held-out test prompts
are then run through it, and a prompt counts as routed to the expert with the highest router
probability averaged over its tokens (BOS left out).

``hidden`` gates come from the base model's hidden states, so they are checked on the first
layer's router only: its input is the same hidden state in the base model and in the MoE.
Deeper routers see hidden states that the routed experts' MLPs moved away from the base
model's, and there ``hidden`` gates confuse skills with the same prompt shape. ``hidden_expert``
gates run each expert's prompts with that expert's MLPs, which is what a top-1 MoE does once
the first layer routes right, so with one expert per token every layer's router is checked.
Rates are printed with ``-s``. ``ALLOYKIT_ZOO`` points the test at a zoo built elsewhere.

On the current zoo (a base that does its operations under their pretraining aliases, 0.995)
``hidden`` gates route every skill's held-out prompts to its expert at layer 0 (>= 84%:
reverse 84%, the rest 96-100%). ``hidden_expert`` gates checked at every layer do not: deeper
routers send some skills elsewhere (sort 56-76% at layers 1-3, largest 72% at layer 1), because
each expert changes the operation choice for every prompt, not only its skill's (see
examples/zoo/README.md, "Merging on this zoo"). That case is marked as an expected failure,
strictly: once a zoo passes it, the test fails until the mark is removed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from alloykit.compose import build_moe

ZOO = Path(os.environ.get("ALLOYKIT_ZOO", Path(__file__).resolve().parents[2] / "examples" / "zoo"))
GATE_PROMPTS = 8  # training prompts per skill that make its gate
HELD_OUT = 25  # test prompts per skill that are routed
REQUIRED = 0.8


def zoo_skills() -> list[str]:
    experts, tasks = ZOO / "experts", ZOO / "tasks"
    if not (ZOO / "base" / "config.json").is_file() or not experts.is_dir():
        return []
    return sorted(
        d.name
        for d in experts.iterdir()
        if (d / "config.json").is_file() and (tasks / d.name / "test.jsonl").is_file()
    )


def prompts(skill: str, split: str, count: int) -> list[str]:
    lines = (ZOO / "tasks" / skill / f"{split}.jsonl").read_text().splitlines()
    return [json.loads(line)["prompt"] for line in lines[:count]]


def routed_experts(model, tokenizer, prompt: str) -> list[int]:
    """Per layer, the expert with the highest router probability averaged over the tokens."""
    encoded = tokenizer(prompt, return_tensors="pt", return_special_tokens_mask=True)
    content = ~encoded.pop("special_tokens_mask")[0].bool()
    with torch.no_grad():
        routers = model(**encoded, output_router_logits=True).router_logits
    return [int(layer[content].softmax(-1).mean(0).argmax()) for layer in routers]


@pytest.mark.skipif(
    len(zoo_skills()) < 2,
    reason=f"example zoo checkpoints are absent from {ZOO} (base/, experts/<skill>/, "
    "tasks/<skill>/): build them with `python examples/zoo/build.py`",
)
@pytest.mark.parametrize(
    ("gate_mode", "experts_per_token", "checked_layers"),
    [
        ("hidden", 2, [0]),
        ("hidden", 1, [0]),
        pytest.param(  # None: every layer
            "hidden_expert",
            1,
            None,
            marks=pytest.mark.xfail(
                reason="deeper routers send sort (56-76%) and largest (72%) elsewhere "
                "(see the module docstring)",
                strict=True,
            ),
        ),
    ],
)
def test_gates_route_held_out_prompts_to_their_skills_expert(
    tmp_path, gate_mode: str, experts_per_token: int, checked_layers: list[int] | None
):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    skills = zoo_skills()
    recipe = {
        "base_model": str(ZOO / "base"),
        "architecture": "mixtral",
        "gate_mode": gate_mode,
        "experts_per_token": experts_per_token,
        "experts": [
            {
                "source_model": str(ZOO / "experts" / skill),
                "positive_prompts": prompts(skill, "train", GATE_PROMPTS),
            }
            for skill in skills
        ],
    }
    out = build_moe(recipe, tmp_path / "moe")
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    rates: dict[tuple[str, int], float] = {}
    for expert, skill in enumerate(skills):
        routed = [routed_experts(model, tokenizer, p) for p in prompts(skill, "test", HELD_OUT)]
        for layer in range(model.config.num_hidden_layers):
            rates[skill, layer] = sum(r[layer] == expert for r in routed) / len(routed)
    report = ", ".join(f"{skill}@{layer}: {rate:.0%}" for (skill, layer), rate in rates.items())
    print(f"router check on {ZOO} ({gate_mode}, top-{experts_per_token}): {report}")
    layers = checked_layers or range(model.config.num_hidden_layers)
    checked = [rate for (_, layer), rate in rates.items() if layer in layers]
    assert min(checked) >= REQUIRED, report
