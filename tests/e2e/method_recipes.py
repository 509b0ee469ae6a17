"""A valid small recipe for any registered method, derived from its contract."""

from __future__ import annotations

from pathlib import Path

from alloykit.methods import BasePolicy, Method


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
    if method.name == "passthrough":
        recipe["models"] = [{"model": str(models["ft1"])}]
    return recipe
