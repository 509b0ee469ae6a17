"""A parameter of another method is ignored with a warning, as mergekit ignores it; a typo
stays an error with a suggestion."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from alloykit.errors import RecipeError
from alloykit.recipe import load_recipe


def slerp(**top_level: Any) -> dict[str, Any]:
    return {
        "merge_method": "slerp",
        "base_model": "a",
        "models": [{"model": "a"}, {"model": "b", "parameters": {"weight": 0.5}}],
        "parameters": {"t": 0.5, **top_level},
    }


def test_weight_given_to_slerp_is_dropped_with_a_warning_naming_it_and_its_methods():
    recipe = load_recipe(slerp())
    assert "weight" not in recipe.models[1].parameters
    (warning,) = recipe.warnings
    assert warning.startswith("models[1].parameters.weight: 'weight' is not a parameter of slerp")
    assert "linear" in warning and "ties" in warning
    assert "ignored" in warning


@pytest.mark.parametrize("method", ["sce", "model_stock", "nearswap"])
def test_weight_given_to_methods_without_it_is_a_warning(method):
    extra = {"nearswap": {"t": 0.5}, "sce": {}, "model_stock": {}}[method]
    recipe = load_recipe(
        {
            "merge_method": method,
            "base_model": "a",
            "models": [
                {"model": "a"},
                {"model": "b", "parameters": {"weight": 1.0}},
                {"model": "c", "parameters": {"weight": 1.0}},
            ]
            if method != "nearswap"
            else [{"model": "a"}, {"model": "b", "parameters": {"weight": 1.0}}],
            "parameters": extra,
        }
    )
    assert recipe.warnings
    assert all(f"not a parameter of {method}" in warning for warning in recipe.warnings)


def test_the_warning_names_the_file_and_line(tmp_path):
    path = tmp_path / "slerp.yml"
    path.write_text(yaml.safe_dump(slerp(density=0.5), sort_keys=False))
    (warning,) = [w for w in load_recipe(path).warnings if "density" in w]
    assert warning.startswith(f"{path}, line ")
    assert "parameters.density" in warning


def test_a_parameter_no_method_takes_stays_an_error_with_a_suggestion():
    with pytest.raises(RecipeError) as caught:
        load_recipe(slerp(weigth=0.5))
    assert "unknown parameter 'weigth' for merge method slerp" in caught.value.message
    assert "did you mean" in caught.value.hint


def test_a_typo_of_the_methods_own_parameter_suggests_it():
    with pytest.raises(RecipeError) as caught:
        load_recipe(slerp(tt=0.5))
    assert "did you mean 't'?" in caught.value.hint


def test_the_warning_reaches_the_plan(llama):
    from alloykit.api import plan

    recipe = {
        "merge_method": "slerp",
        "base_model": str(llama["ft1"]),
        "models": [
            {"model": str(llama["ft1"])},
            {"model": str(llama["ft2"]), "parameters": {"weight": 0.3}},
        ],
        "parameters": {"t": 0.5},
    }
    the_plan = plan(recipe)
    assert any("'weight' is not a parameter of slerp" in w for w in the_plan.warnings)
