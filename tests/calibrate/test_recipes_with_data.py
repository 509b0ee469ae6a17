"""Recipes name statistics files or calibration data; the engine merges with them."""

from __future__ import annotations

import pytest
import torch

import alloykit
from alloykit.calibrate import calibrate, read_info
from alloykit.checkpoint.source import open_source
from alloykit.methods.fisher import fisher_merge
from alloykit.methods.regmean import regmean


@pytest.fixture(scope="module")
def experts(zoo_base):
    zoo = zoo_base.parent
    return [(zoo / "experts" / s, zoo / "tasks" / s) for s in ("sort", "lower")]


def stats_of(path, key: str) -> torch.Tensor:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return handle.get_tensor(key)


def test_fisher_recipe_merges_with_each_models_statistics_file(experts, tmp_path) -> None:
    files = [
        calibrate(m, t, tmp_path / f"{m.name}.safetensors", kinds=["fisher"], samples=6)
        for m, t in experts
    ]
    recipe = {
        "merge_method": "fisher",
        "models": [
            {"model": str(m), "statistics": str(f), "parameters": {"weight": w}}
            for (m, _), f, w in zip(experts, files, [1.0, 2.0], strict=True)
        ],
    }
    merged = alloykit.merge_to_state_dict(recipe)
    name = "model.layers.1.mlp.up_proj.weight"
    weights = torch.stack([open_source(str(m)).read(name) for m, _ in experts])
    fishers = torch.stack([stats_of(f, f"fisher:{name}") for f in files])
    expected = fisher_merge(
        weights, None, weight=torch.tensor([1.0, 2.0]), fisher_floor=1e-6, fisher=fishers
    )
    torch.testing.assert_close(merged[name], expected)


def test_regmean_recipe_with_data_calibrates_once_and_uses_the_grams(
    experts, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("ALLOYKIT_CACHE", str(tmp_path / "cache"))
    recipe = {
        "merge_method": "regmean",
        "parameters": {"alpha": 0.9},
        "models": [{"model": str(m), "data": str(t)} for m, t in experts],
    }
    merged = alloykit.merge_to_state_dict(recipe)
    cached = sorted((tmp_path / "cache" / "statistics").glob("*.safetensors"))
    assert len(cached) == 2
    name = "model.layers.2.self_attn.o_proj.weight"
    weights = torch.stack([open_source(str(m)).read(name) for m, _ in experts])
    by_model = {}
    for path in cached:
        by_model[read_info(path).data.split(" ")[1]] = path
    grams = torch.stack([stats_of(by_model[t.name], f"gram:{name}") for _, t in experts])
    torch.testing.assert_close(merged[name], regmean(weights, None, alpha=0.9, gram=grams))
    norm = "model.norm.weight"
    plain = torch.stack([open_source(str(m)).read(norm) for m, _ in experts]).mean(dim=0)
    torch.testing.assert_close(merged[norm], plain)
    alloykit.merge_to_state_dict(recipe)
    assert sorted((tmp_path / "cache" / "statistics").glob("*.safetensors")) == cached


def test_missing_data_names_the_recipe_key(experts, tmp_path, monkeypatch) -> None:
    from alloykit.calibrate import CalibrationDataError

    monkeypatch.setenv("ALLOYKIT_CACHE", str(tmp_path / "cache"))
    recipe = {
        "merge_method": "regmean",
        "models": [{"model": str(m), "data": str(tmp_path / "none.jsonl")} for m, _ in experts],
    }
    with pytest.raises(CalibrationDataError, match=r"^models\[0\]\.data: calibration data"):
        alloykit.plan(recipe)
