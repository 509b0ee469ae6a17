"""BERT-like encoders: layer structure is inferred from ``encoder.layer.N`` names too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import alloykit


@pytest.fixture(scope="module")
def berts(tmp_path_factory) -> dict[str, Path]:
    from transformers import AutoConfig, AutoModelForMaskedLM

    from alloykit.tiny_models import build_finetune

    config = AutoConfig.for_model(
        "bert",
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=64,
        vocab_size=128,
        max_position_embeddings=64,
    )
    root = tmp_path_factory.mktemp("bert")
    torch.manual_seed(0)
    AutoModelForMaskedLM.from_config(config).save_pretrained(root / "base")
    return {
        "base": root / "base",
        "ft1": build_finetune(root / "base", root / "ft1", seed=1),
        "ft2": build_finetune(root / "base", root / "ft2", seed=2),
    }


def logits_of(directory: Path) -> torch.Tensor:
    from transformers import AutoModelForMaskedLM

    model = AutoModelForMaskedLM.from_pretrained(directory).eval()
    with torch.no_grad():
        return model(torch.arange(1, 9).unsqueeze(0)).logits


def test_bert_ties_merge_loads_as_a_masked_lm(berts, tmp_path):
    recipe = {
        "merge_method": "ties",
        "base_model": str(berts["base"]),
        "models": [
            {"model": str(berts[k]), "parameters": {"density": 0.5}} for k in ("ft1", "ft2")
        ],
    }
    out = alloykit.merge(recipe, tmp_path / "out")
    assert bool(torch.isfinite(logits_of(out)).all())


def test_bert_slices_drop_a_layer_and_update_the_config(berts, tmp_path):
    recipe = {
        "merge_method": "passthrough",
        "slices": [
            {"sources": [{"model": str(berts["ft1"]), "layer_range": [0, 1]}]},
            {"sources": [{"model": str(berts["ft1"]), "layer_range": [2, 3]}]},
        ],
    }
    plan = alloykit.plan(recipe)
    assert any(d.name.startswith("bert.encoder.layer.1.") for d in plan.dropped)
    out = alloykit.merge(recipe, tmp_path / "out")
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 2
    assert logits_of(out).shape == (1, 8, 128)
