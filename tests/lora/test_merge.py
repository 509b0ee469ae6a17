"""``merge_adapters``: catalog methods on each module's delta-W, never on A and B separately."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lora_files import adapter_delta, read_adapter, read_model

from alloykit.errors import AlloyError
from alloykit.lora import ExtractOptions, extract_adapter
from alloykit.lora.merge import AdapterMergeOptions, merge_adapters
from alloykit.methods import get_method

MODULES = ("model.layers.0.self_attn.q_proj", "model.layers.3.mlp.down_proj", "lm_head")


@pytest.fixture
def two_adapters(llama: dict[str, Path], tmp_path: Path) -> list[Path]:
    """Rank-4 and rank-3 adapters of ft1 and ft2, embeddings left out (they would be full)."""
    out = []
    for tuned, rank in (("ft1", 4), ("ft2", 3)):
        options = ExtractOptions(rank=rank, exclude=["embed"])
        extract_adapter(llama[tuned], llama["base"], tmp_path / tuned, options)
        out.append(tmp_path / tuned)
    return out


def deltas_of(adapter: Path, module: str) -> torch.Tensor:
    config, tensors = read_adapter(adapter)
    return adapter_delta(config, tensors, module)


def test_linear_concatenation_is_exact_with_negative_weights(
    two_adapters: list[Path], tmp_path: Path
):
    options = AdapterMergeOptions(parameters={"weight": [0.7, -0.3], "normalize": False})
    result = merge_adapters(two_adapters, tmp_path / "merged", options)
    assert result.concatenated
    config, _ = read_adapter(tmp_path / "merged")
    assert config["r"] == config["lora_alpha"] == 4 + 3
    for module in config["target_modules"]:
        expected = 0.7 * deltas_of(two_adapters[0], module) - 0.3 * deltas_of(
            two_adapters[1], module
        )
        merged = deltas_of(tmp_path / "merged", module)
        torch.testing.assert_close(merged, expected, rtol=1e-5, atol=1e-7, msg=module)


def test_linear_normalizes_by_the_weights_sum_as_in_the_catalog(
    two_adapters: list[Path], tmp_path: Path
):
    options = AdapterMergeOptions(parameters={"weight": [3.0, 1.0]})
    merge_adapters(two_adapters, tmp_path / "merged", options)
    for module in MODULES:
        expected = (3 * deltas_of(two_adapters[0], module) + deltas_of(two_adapters[1], module)) / 4
        torch.testing.assert_close(
            deltas_of(tmp_path / "merged", module), expected, rtol=1e-5, atol=1e-7
        )


def test_task_arithmetic_concatenation_applies_lambda(two_adapters: list[Path], tmp_path: Path):
    options = AdapterMergeOptions(
        method="task_arithmetic", parameters={"weight": [1.0, -1.0], "lambda": 0.5}
    )
    merge_adapters(two_adapters, tmp_path / "merged", options)
    for module in MODULES:
        expected = 0.5 * (deltas_of(two_adapters[0], module) - deltas_of(two_adapters[1], module))
        torch.testing.assert_close(
            deltas_of(tmp_path / "merged", module), expected, rtol=1e-5, atol=1e-7
        )


def test_ties_runs_the_registered_kernel_on_the_deltas(two_adapters: list[Path], tmp_path: Path):
    options = AdapterMergeOptions(method="ties", parameters={"density": 0.4}, energy=1.0)
    merge_adapters(two_adapters, tmp_path / "merged", options)
    ties = get_method("ties").kernel
    for module in MODULES:
        stacked = torch.stack([deltas_of(a, module).float() for a in two_adapters])
        expected = ties(
            stacked,
            torch.zeros_like(stacked[0]),
            weight=torch.ones(2),
            density=torch.full((2,), 0.4),
            consensus_method="total",
            normalize=True,
            rescale=False,
            rescale_mode="l1",
            **{"lambda": 1.0, "int8_mask": False},
        )
        merged = deltas_of(tmp_path / "merged", module).float()
        torch.testing.assert_close(merged, expected, rtol=1e-4, atol=1e-6, msg=module)


def test_refactorised_merge_has_the_requested_rank(two_adapters: list[Path], tmp_path: Path):
    options = AdapterMergeOptions(method="dare_ties", parameters={"density": 0.5}, rank=2)
    result = merge_adapters(two_adapters, tmp_path / "merged", options)
    assert not result.concatenated
    config, tensors = read_adapter(tmp_path / "merged")
    assert config["r"] == 2 and config["rank_pattern"] == {}
    assert tensors["base_model.model.lm_head.lora_A.weight"].shape == (2, 32)


def test_dare_merges_are_reproducible_for_a_seed(two_adapters: list[Path], tmp_path: Path):
    options = AdapterMergeOptions(method="dare_linear", parameters={"density": 0.5}, rank=2)
    merge_adapters(two_adapters, tmp_path / "one", options)
    merge_adapters(two_adapters, tmp_path / "two", options)
    assert read_adapter(tmp_path / "one")[1].keys() == read_adapter(tmp_path / "two")[1].keys()
    for key, tensor in read_adapter(tmp_path / "one")[1].items():
        assert torch.equal(tensor, read_adapter(tmp_path / "two")[1][key])


def test_methods_that_are_not_linear_need_a_target_rank(two_adapters: list[Path], tmp_path: Path):
    with pytest.raises(AlloyError, match="'ties' needs --rank or --energy"):
        merge_adapters(two_adapters, tmp_path / "merged", AdapterMergeOptions(method="ties"))


def test_weight_space_methods_are_refused(two_adapters: list[Path], tmp_path: Path):
    with pytest.raises(AlloyError, match="does not merge task vectors"):
        merge_adapters(
            two_adapters, tmp_path / "merged", AdapterMergeOptions(method="slerp", rank=2)
        )


def test_full_embeddings_merge_against_the_base(llama: dict[str, Path], tmp_path: Path):
    for tuned in ("ft1", "ft2"):
        extract_adapter(llama[tuned], llama["base"], tmp_path / tuned, ExtractOptions(rank=2))
    adapters = [tmp_path / "ft1", tmp_path / "ft2"]
    with pytest.raises(AlloyError, match="pass --base BASE"):
        merge_adapters(adapters, tmp_path / "merged")
    options = AdapterMergeOptions(
        parameters={"weight": [0.5, -0.5], "normalize": False}, base=str(llama["base"])
    )
    merge_adapters(adapters, tmp_path / "merged", options)
    config, tensors = read_adapter(tmp_path / "merged")
    assert config["modules_to_save"] == ["model.embed_tokens"]
    name = "model.embed_tokens.weight"
    base, one, two = (read_model(llama[m])[name] for m in ("base", "ft1", "ft2"))
    expected = base + 0.5 * (one - base) - 0.5 * (two - base)
    torch.testing.assert_close(tensors[f"base_model.model.{name}"], expected)
