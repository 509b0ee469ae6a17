"""PEFT loads the adapters we write, and we apply the adapters PEFT writes, the same way."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lora_files import read_model

from alloykit.lora import ExtractOptions, apply_adapter, extract_adapter
from alloykit.lora.merge import AdapterMergeOptions, merge_adapters

pytestmark = pytest.mark.filterwarnings(
    "ignore::FutureWarning", "ignore:Setting `save_embedding_layers`:UserWarning"
)
peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")


def logits(model, seed: int = 0) -> torch.Tensor:
    ids = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model(ids).logits


def load(directory: Path):
    return transformers.AutoModelForCausalLM.from_pretrained(directory).eval()


def peft_logits(base: Path, adapter: Path) -> torch.Tensor:
    return logits(peft.PeftModel.from_pretrained(load(base), adapter).eval())


@pytest.mark.parametrize("embeddings", ["full", "low-rank"])
def test_peft_output_equals_the_applied_model(
    llama: dict[str, Path], tmp_path: Path, embeddings: str
):
    options = ExtractOptions(energy=0.7, embeddings=embeddings)  # per-module ranks
    result = extract_adapter(llama["ft1"], llama["base"], tmp_path / "adapter", options)
    assert result.config["rank_pattern"]
    apply_adapter(llama["base"], tmp_path / "adapter", tmp_path / "applied")
    expected = logits(load(tmp_path / "applied"))
    torch.testing.assert_close(
        peft_logits(llama["base"], tmp_path / "adapter"), expected, atol=1e-5, rtol=1e-5
    )


def test_peft_runs_a_concatenated_merge_like_the_applied_model(
    llama: dict[str, Path], tmp_path: Path
):
    for tuned in ("ft1", "ft2"):
        options = ExtractOptions(rank=3, exclude=["embed"])
        extract_adapter(llama[tuned], llama["base"], tmp_path / tuned, options)
    options = AdapterMergeOptions(parameters={"weight": [1.0, -0.5], "normalize": False})
    merge_adapters([tmp_path / "ft1", tmp_path / "ft2"], tmp_path / "merged", options)
    apply_adapter(llama["base"], tmp_path / "merged", tmp_path / "applied")
    expected = logits(load(tmp_path / "applied"))
    torch.testing.assert_close(
        peft_logits(llama["base"], tmp_path / "merged"), expected, atol=1e-5, rtol=1e-5
    )


def test_apply_equals_merge_and_unload_of_an_adapter_saved_by_peft(
    llama: dict[str, Path], tmp_path: Path
):
    config = peft.LoraConfig(
        r=4,
        lora_alpha=6,
        target_modules=["q_proj", "down_proj", "embed_tokens"],
        rank_pattern={"down_proj": 2},
        modules_to_save=["model.norm"],
        init_lora_weights=False,  # random B: a non-zero change
    )
    torch.manual_seed(0)
    model = peft.get_peft_model(load(llama["base"]), config)
    with torch.no_grad():
        model.base_model.model.model.norm.modules_to_save["default"].weight.mul_(1.5)
    model.save_pretrained(tmp_path / "adapter")
    apply_adapter(llama["base"], tmp_path / "adapter", tmp_path / "applied")
    expected = model.merge_and_unload().state_dict()
    applied = read_model(tmp_path / "applied")
    for name, tensor in applied.items():
        torch.testing.assert_close(tensor, expected[name], atol=1e-6, rtol=1e-5, msg=name)


def test_gpt2_conv1d_layers_use_fan_in_fan_out(family_models, tmp_path: Path):
    gpt2 = family_models("gpt2")
    options = ExtractOptions(rank=4, exclude=["wte"])  # tied head: see docs/lora.md
    result = extract_adapter(gpt2["ft1"], gpt2["base"], tmp_path / "adapter", options)
    assert result.config["fan_in_fan_out"] is True
    apply_adapter(gpt2["base"], tmp_path / "adapter", tmp_path / "applied")
    expected = logits(load(tmp_path / "applied"))
    torch.testing.assert_close(
        peft_logits(gpt2["base"], tmp_path / "adapter"), expected, atol=1e-5, rtol=1e-5
    )
