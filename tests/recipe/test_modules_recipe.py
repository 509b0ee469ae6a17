"""``modules:`` recipes: one sub-recipe per module, with mergekit's parameter precedence
(model → slice → module → top level) and alloykit's per-module ``merge_method``."""

from __future__ import annotations

from typing import Any

import pytest

from alloykit.errors import RecipeError
from alloykit.methods import get_method
from alloykit.recipe import load_recipe, resolve_parameters


def modules(**changes: Any) -> dict[str, Any]:
    recipe: dict[str, Any] = {
        "merge_method": "ties",
        "base_model": "base",
        "parameters": {"density": [{"filter": "mlp", "value": 0.3}, {"value": 0.9}]},
        "modules": {
            "text_decoder": {
                "models": [{"model": "a", "parameters": {"weight": 1.0}}],
                "parameters": {"density": [{"filter": "self_attn", "value": 0.5}]},
            },
            "vision_tower": {
                "merge_method": "slerp",
                "models": ["base", "a"],
                "parameters": {"t": 0.25},
            },
        },
    }
    recipe.update(changes)
    return recipe


def error_of(source: Any) -> RecipeError:
    with pytest.raises(RecipeError) as caught:
        load_recipe(source)
    assert "\n" not in str(caught.value)
    return caught.value


def density_of(tensor_name: str) -> float:
    recipe = load_recipe(modules())
    text = recipe.modules[0].recipe
    values = resolve_parameters(
        text,
        get_method("ties"),
        tensor_name=tensor_name,
        t=0.0,
        slice_index=None,
        model_input=text.models[0],
    )
    return values["density"]


def test_each_module_becomes_a_sub_recipe_with_its_own_method():
    recipe = load_recipe(modules())
    assert recipe.models is None and recipe.slices is None
    assert [(m.name, m.recipe.merge_method) for m in recipe.modules] == [
        ("text_decoder", "ties"),
        ("vision_tower", "slerp"),
    ]
    assert recipe.modules[1].recipe.base_model == "base"


def test_the_module_value_wins_over_the_top_level():
    assert density_of("model.layers.0.self_attn.q_proj.weight") == 0.5


def test_a_module_filter_that_matches_nothing_falls_through_to_the_top_level():
    assert density_of("model.layers.0.mlp.up_proj.weight") == 0.3
    assert density_of("model.norm.weight") == 0.9


def test_a_top_level_parameter_another_module_method_ignores_is_a_warning_naming_it():
    recipe = load_recipe(modules())
    assert any(
        "'density' is not a parameter of slerp" in w and "vision_tower" in w
        for w in recipe.warnings
    )


def test_model_references_include_every_module():
    recipe = modules()
    recipe["modules"]["vision_tower"]["models"] = ["base", "c"]
    assert load_recipe(recipe).model_references() == ["base", "a", "c"]


def test_modules_and_models_together_are_refused():
    error = error_of(modules(models=["a"]))
    assert error.message.startswith("modules: give one of models, modules")


def test_a_module_needs_models_or_slices():
    recipe = modules()
    recipe["modules"]["vision_tower"] = {"parameters": {"t": 0.5}}
    error = error_of(recipe)
    assert error.message.startswith("modules.vision_tower: a module needs either models:")


def test_an_unknown_module_key_suggests_the_closest():
    recipe = modules()
    recipe["modules"]["vision_tower"]["modles"] = recipe["modules"]["vision_tower"].pop("models")
    error = error_of(recipe)
    assert error.message.startswith("modules.vision_tower.modles: unknown key")
    assert "did you mean 'models'?" in (error.hint or "")


def test_an_unknown_module_method_names_its_key_path():
    recipe = modules()
    recipe["modules"]["vision_tower"]["merge_method"] = "slurp"
    error = error_of(recipe)
    assert error.message.startswith("modules.vision_tower.merge_method: unknown merge method")


def test_module_parameters_are_checked_against_the_module_method():
    recipe = modules()
    recipe["modules"]["vision_tower"]["parameters"] = {"t": 1.5}
    assert error_of(recipe).message.startswith("modules.vision_tower.parameters.t: ")


def test_a_module_method_that_needs_a_base_model_without_one_is_refused():
    recipe = modules()
    del recipe["base_model"]
    error = error_of(recipe)
    assert error.message == "modules.text_decoder.models: merge method ties needs a base_model"


def test_a_module_with_too_many_models_names_its_key_path():
    recipe = modules()
    recipe["modules"]["vision_tower"]["models"] = ["base", "a", "c"]
    error = error_of(recipe)
    assert error.message.startswith("modules.vision_tower.models: merge method slerp takes")
