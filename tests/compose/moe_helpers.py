"""Helpers shared by the MoE tests: recipes on disk, loading models, logits."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml


def write_recipe(path: Path, recipe: dict) -> Path:
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def load_causal_lm(directory: Path):
    """The model in ``directory``, and transformers' report of keys it could not match."""
    from transformers import AutoModelForCausalLM

    model, info = AutoModelForCausalLM.from_pretrained(directory, output_loading_info=True)
    return model.eval(), {k: v for k, v in info.items() if v}


@torch.no_grad()
def logits_of(model, length: int = 24) -> torch.Tensor:
    ids = (torch.arange(length) * 7 % model.config.vocab_size).unsqueeze(0)
    return model(ids).logits
