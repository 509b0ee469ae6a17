"""A valid small recipe for any registered method, derived from its contract."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from alloykit.calibrate import fingerprint
from alloykit.checkpoint.source import open_source
from alloykit.methods import BasePolicy, Method


def statistics_file(model: Path, kinds: list[str]) -> Path:
    """Well-formed statistics of ``model`` (random Grams of its 2-D weights, positive Fisher
    diagonals), as ``alloykit calibrate`` lays them out, written once beside it."""
    path = model.parent / f"{model.name}-{'-'.join(kinds)}.statistics.safetensors"
    if path.is_file():
        return path
    source = open_source(str(model))
    generator = torch.Generator().manual_seed(len(str(model)))
    tensors = {}
    for name, meta in source.tensors.items():
        if not meta.dtype.is_floating_point:
            continue
        if "fisher" in kinds:
            tensors[f"fisher:{name}"] = torch.rand(meta.shape, generator=generator) + 0.1
        if "gram" in kinds and len(meta.shape) == 2 and "embed" not in name:
            inputs = torch.randn(2 * meta.shape[1], meta.shape[1], generator=generator)
            tensors[f"gram:{name}"] = inputs.T @ inputs / inputs.shape[0]
    metadata = {
        "alloykit.statistics": "1",
        "alloykit.model_fingerprint": fingerprint(source),
        "alloykit.kinds": ",".join(kinds),
        "alloykit.samples": "1",
        "alloykit.tokens": "1",
        "alloykit.data": "random (test)",
        "alloykit.seed": "0",
    }
    save_file(tensors, str(path), metadata=metadata)
    return path


def recipe_for(method: Method, models: dict[str, Path]) -> dict:
    """A valid recipe for ``method`` built from its contract: base if used, 2 models if allowed."""
    count = 2 if (method.max_models is None or method.max_models >= 2) else method.max_models
    count = max(count, method.min_models)
    chosen = [str(models[f"ft{i + 1}"]) for i in range(count)]
    recipe: dict = {"merge_method": method.name, "dtype": "float32"}
    if method.base is not BasePolicy.UNUSED:
        recipe["base_model"] = str(models["base"])
    recipe["models"] = [{"model": m} for m in chosen]
    if method.name == "slerp" or method.name == "nearswap":
        recipe["parameters"] = {"t": 0.3}
    if any(p.name == "density" for p in method.params):
        for item in recipe["models"]:
            item["parameters"] = {"density": 0.7}
    if method.name == "breadcrumbs" or method.name == "breadcrumbs_ties":
        for item in recipe["models"]:
            item["parameters"] = {"density": 0.7, "gamma": 0.05}
    if method.statistics:
        kinds = [statistic.name for statistic in method.statistics]
        for item in recipe["models"]:
            item["statistics"] = str(statistics_file(Path(item["model"]), kinds))
    if method.name == "passthrough":
        recipe["models"] = [{"model": str(models["ft1"])}]
    return recipe
