"""``extract_adapter``: truncated SVD of each module's delta, every changed tensor accounted for."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lora_files import adapter_delta, read_adapter, read_model, variant

from alloykit.errors import AlloyError
from alloykit.lora import ExtractOptions, apply_adapter, extract_adapter
from alloykit.lora.report import Capture

LINEAR = "model.layers.2.mlp.down_proj"
NORM = "model.layers.1.input_layernorm.weight"


def deltas(llama: dict[str, Path], tuned: str = "ft1") -> dict[str, torch.Tensor]:
    base, model = read_model(llama["base"]), read_model(llama[tuned])
    return {name: model[name].double() - base[name].double() for name in base}


def test_full_rank_extract_then_apply_reproduces_the_fine_tune(
    llama: dict[str, Path], norm_tuned: Path, tmp_path: Path
):
    options = ExtractOptions(energy=1.0, save_unfactorable=True)
    extract_adapter(norm_tuned, llama["base"], tmp_path / "adapter", options)
    apply_adapter(llama["base"], tmp_path / "adapter", tmp_path / "applied")
    applied, expected = read_model(tmp_path / "applied"), read_model(norm_tuned)
    assert applied.keys() == expected.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(applied[name], tensor, rtol=0, atol=1e-6, msg=name)


def test_rank_r_squared_error_equals_the_discarded_singular_value_energy(
    llama: dict[str, Path], tmp_path: Path
):
    extract_adapter(llama["ft1"], llama["base"], tmp_path / "adapter", ExtractOptions(rank=4))
    config, tensors = read_adapter(tmp_path / "adapter")
    assert config["r"] == config["lora_alpha"] == 4
    checked = 0
    for name, delta in deltas(llama).items():
        module = name.removesuffix(".weight")
        if module not in config["target_modules"]:
            continue
        discarded = torch.linalg.svdvals(delta)[4:].square().sum()
        error = (delta - adapter_delta(config, tensors, module)).square().sum()
        torch.testing.assert_close(error, discarded, rtol=1e-4, atol=1e-12, msg=module)
        checked += 1
    assert checked == 4 * 7 + 1  # every projection of every layer, and lm_head


def test_energy_picks_the_smallest_rank_keeping_that_share(llama: dict[str, Path], tmp_path: Path):
    result = extract_adapter(
        llama["ft1"], llama["base"], tmp_path / "adapter", ExtractOptions(energy=0.6)
    )
    config, _ = read_adapter(tmp_path / "adapter")
    assert config["rank_pattern"] == config["alpha_pattern"]
    ranks = {r.name: r.rank for r in result.rows if r.capture is Capture.LOW_RANK}
    for name, delta in deltas(llama).items():
        if name not in ranks:
            continue
        squares = torch.linalg.svdvals(delta).square()
        kept = torch.cumsum(squares, 0) / squares.sum()
        rank = ranks[name]
        assert kept[rank - 1] >= 0.6 - 1e-9
        assert rank == 1 or kept[rank - 2] < 0.6
        module = name.removesuffix(".weight")
        assert config["rank_pattern"].get(module, config["r"]) == rank


def test_singular_values_are_split_symmetrically_between_a_and_b(
    llama: dict[str, Path], tmp_path: Path
):
    extract_adapter(llama["ft1"], llama["base"], tmp_path / "adapter", ExtractOptions(rank=4))
    _, tensors = read_adapter(tmp_path / "adapter")
    a = tensors[f"base_model.model.{LINEAR}.lora_A.weight"].double()
    b = tensors[f"base_model.model.{LINEAR}.lora_B.weight"].double()
    singular = torch.linalg.svdvals(deltas(llama)[f"{LINEAR}.weight"])[:4]
    torch.testing.assert_close(a @ a.T, torch.diag(singular), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(b.T @ b, torch.diag(singular), atol=1e-6, rtol=1e-5)


def test_changed_norms_are_reported_as_not_captured(
    llama: dict[str, Path], norm_tuned: Path, tmp_path: Path
):
    result = extract_adapter(
        norm_tuned, llama["base"], tmp_path / "adapter", ExtractOptions(rank=4)
    )
    row = next(r for r in result.rows if r.name == NORM)
    assert row.capture is Capture.NOT_CAPTURED
    assert row.relative_error == 1.0
    _, tensors = read_adapter(tmp_path / "adapter")
    assert not any("input_layernorm" in key for key in tensors)
    readme = (tmp_path / "adapter" / "README.md").read_text()
    assert f"| `{NORM}` | not captured |" in readme
    assert "1 changed tensors are not in this adapter" in readme


def test_save_unfactorable_keeps_changed_norms_as_modules_to_save(
    llama: dict[str, Path], norm_tuned: Path, tmp_path: Path
):
    options = ExtractOptions(rank=4, save_unfactorable=True)
    result = extract_adapter(norm_tuned, llama["base"], tmp_path / "adapter", options)
    assert next(r for r in result.rows if r.name == NORM).capture is Capture.FULL
    config, tensors = read_adapter(tmp_path / "adapter")
    assert "model.layers.1.input_layernorm" in config["modules_to_save"]
    torch.testing.assert_close(tensors[f"base_model.model.{NORM}"], read_model(norm_tuned)[NORM])


def test_embeddings_are_saved_in_full_by_default(llama: dict[str, Path], tmp_path: Path):
    extract_adapter(llama["ft1"], llama["base"], tmp_path / "adapter", ExtractOptions(rank=4))
    config, tensors = read_adapter(tmp_path / "adapter")
    assert config["modules_to_save"] == ["model.embed_tokens"]
    embed = "model.embed_tokens.weight"
    assert torch.equal(tensors[f"base_model.model.{embed}"], read_model(llama["ft1"])[embed])


def test_low_rank_embeddings_use_peft_embedding_factors(llama: dict[str, Path], tmp_path: Path):
    options = ExtractOptions(rank=4, embeddings="low-rank")
    extract_adapter(llama["ft1"], llama["base"], tmp_path / "adapter", options)
    config, tensors = read_adapter(tmp_path / "adapter")
    assert config["modules_to_save"] is None
    assert "model.embed_tokens" in config["target_modules"]
    a = tensors["base_model.model.model.embed_tokens.lora_embedding_A"]
    b = tensors["base_model.model.model.embed_tokens.lora_embedding_B"]
    assert a.shape == (4, 128) and b.shape == (32, 4)  # (B @ A)ᵀ has the [vocab, dim] layout


def test_include_and_exclude_select_modules_by_regex(llama: dict[str, Path], tmp_path: Path):
    options = ExtractOptions(rank=4, include=[r"layers\.0\."], exclude=["mlp"])
    result = extract_adapter(llama["ft1"], llama["base"], tmp_path / "adapter", options)
    config, _ = read_adapter(tmp_path / "adapter")
    assert config["target_modules"] == [
        f"model.layers.0.self_attn.{p}_proj" for p in ("k", "o", "q", "v")
    ]
    excluded = {r.name for r in result.rows if r.capture is Capture.EXCLUDED}
    assert "model.layers.0.mlp.up_proj.weight" in excluded
    assert "lm_head.weight" in excluded


def test_randomized_svd_recovers_an_exactly_low_rank_delta(llama: dict[str, Path], tmp_path: Path):
    generator = torch.Generator().manual_seed(0)

    def rank_two_update(tensors):
        out = dict(tensors)
        for name, tensor in tensors.items():
            if tensor.dim() == 2 and "embed" not in name:
                left = torch.randn(tensor.shape[0], 2, generator=generator)
                right = torch.randn(2, tensor.shape[1], generator=generator)
                out[name] = tensor + 0.01 * left @ right
        return out

    tuned = variant(llama["base"], tmp_path / "rank-two", rank_two_update)
    options = ExtractOptions(rank=2, svd="randomized", exclude=["embed"])
    result = extract_adapter(tuned, llama["base"], tmp_path / "adapter", options)
    low_rank = [r for r in result.rows if r.capture is Capture.LOW_RANK]
    assert len(low_rank) == 29
    assert max(r.relative_error for r in low_rank) < 1e-4


def test_identical_models_leave_no_output(llama: dict[str, Path], tmp_path: Path):
    with pytest.raises(AlloyError, match="identical tensors"):
        extract_adapter(llama["base"], llama["base"], tmp_path / "out", ExtractOptions(rank=2))
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "out.partial").exists()


def test_readme_lists_every_changed_tensor_with_its_error(llama: dict[str, Path], tmp_path: Path):
    result = extract_adapter(
        llama["ft1"], llama["base"], tmp_path / "adapter", ExtractOptions(rank=4)
    )
    readme = (tmp_path / "adapter" / "README.md").read_text()
    for row in result.rows:
        assert f"| `{row.name}` | {row.capture.value} |" in readme
        assert f"{row.relative_error:.4f} |" in readme


def test_tied_embeddings_are_flagged(family_models, tmp_path: Path):
    gpt2 = family_models("gpt2")
    result = extract_adapter(
        gpt2["ft1"], gpt2["base"], tmp_path / "adapter", ExtractOptions(rank=4)
    )
    assert any("ties its output head" in w for w in result.warnings)
    assert "ties its output head" in (tmp_path / "adapter" / "README.md").read_text()
