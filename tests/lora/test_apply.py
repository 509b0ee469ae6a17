"""Applying an adapter: ``W + alpha/r · B @ A`` per module, streamed into a full model, and
``model+adapter`` references in recipes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from lora_files import read_model
from safetensors.torch import save_file

from alloykit.api import merge_to_state_dict
from alloykit.lora import apply_adapter

Q = "model.layers.1.self_attn.q_proj"
UP = "model.layers.2.mlp.up_proj"
EMBED = "model.embed_tokens"


def handmade_adapter(directory: Path, **config_changes) -> dict[str, torch.Tensor]:
    """An adapter written as PEFT would, with alpha != r, a rank_pattern and an embedding."""
    generator = torch.Generator().manual_seed(3)
    factors = {
        f"{Q}.lora_A.weight": torch.randn(4, 32, generator=generator),
        f"{Q}.lora_B.weight": torch.randn(32, 4, generator=generator),
        f"{UP}.lora_A.weight": torch.randn(2, 32, generator=generator),
        f"{UP}.lora_B.weight": torch.randn(64, 2, generator=generator),
        f"{EMBED}.lora_embedding_A": torch.randn(4, 128, generator=generator),
        f"{EMBED}.lora_embedding_B": torch.randn(32, 4, generator=generator),
    }
    directory.mkdir()
    save_file(
        {f"base_model.model.{k}": v for k, v in factors.items()},
        directory / "adapter_model.safetensors",
    )
    config = {
        "peft_type": "LORA",
        "r": 4,
        "lora_alpha": 8,
        "rank_pattern": {"up_proj": 2},
        "alpha_pattern": {"up_proj": 1},
        "target_modules": ["q_proj", "up_proj", "embed_tokens"],
        **config_changes,
    }
    (directory / "adapter_config.json").write_text(json.dumps(config))
    return factors


def test_apply_adds_scaled_products_and_copies_the_rest(llama: dict[str, Path], tmp_path: Path):
    f = handmade_adapter(tmp_path / "adapter")
    apply_adapter(llama["base"], tmp_path / "adapter", tmp_path / "out")
    out, base = read_model(tmp_path / "out"), read_model(llama["base"])
    expected = dict(base)
    expected[f"{Q}.weight"] = (
        base[f"{Q}.weight"] + 2.0 * f[f"{Q}.lora_B.weight"] @ f[f"{Q}.lora_A.weight"]
    )
    expected[f"{UP}.weight"] = (
        base[f"{UP}.weight"] + 0.5 * f[f"{UP}.lora_B.weight"] @ f[f"{UP}.lora_A.weight"]
    )
    embed = f[f"{EMBED}.lora_embedding_B"] @ f[f"{EMBED}.lora_embedding_A"]
    expected[f"{EMBED}.weight"] = base[f"{EMBED}.weight"] + 2.0 * embed.T
    assert out.keys() == expected.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(out[name], tensor, msg=name)
        if name not in (f"{Q}.weight", f"{UP}.weight", f"{EMBED}.weight"):
            assert torch.equal(out[name], tensor), name
    assert (tmp_path / "out" / "config.json").exists()
    assert not (tmp_path / "out.partial").exists()


def test_rslora_scales_by_alpha_over_sqrt_r(llama: dict[str, Path], tmp_path: Path):
    f = handmade_adapter(tmp_path / "adapter", use_rslora=True)
    apply_adapter(llama["base"], tmp_path / "adapter", tmp_path / "out")
    product = f[f"{Q}.lora_B.weight"] @ f[f"{Q}.lora_A.weight"]
    expected = read_model(llama["base"])[f"{Q}.weight"] + (8 / 4**0.5) * product
    torch.testing.assert_close(read_model(tmp_path / "out")[f"{Q}.weight"], expected)


@pytest.mark.parametrize("form", ["string", "mergekit dict"])
def test_recipes_may_name_model_plus_adapter(llama: dict[str, Path], tmp_path: Path, form: str):
    handmade_adapter(tmp_path / "adapter")
    apply_adapter(llama["base"], tmp_path / "adapter", tmp_path / "applied")
    adapted = (
        f"{llama['base']}+{tmp_path / 'adapter'}"
        if form == "string"
        else {"model": str(llama["base"]), "lora": str(tmp_path / "adapter")}
    )
    recipe = {
        "merge_method": "linear",
        "models": [
            {"model": adapted, "parameters": {"weight": 1.0}},
            {"model": str(llama["ft1"]), "parameters": {"weight": 1.0}},
        ],
    }
    merged = merge_to_state_dict(recipe)
    applied, tuned = read_model(tmp_path / "applied"), read_model(llama["ft1"])
    for name, tensor in merged.items():
        torch.testing.assert_close(tensor, (applied[name] + tuned[name]) / 2, msg=name)
