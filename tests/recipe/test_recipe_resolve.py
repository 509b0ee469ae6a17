"""resolve_parameters and the depth rule: which value each model's tensor gets."""

from __future__ import annotations

import pytest

from alloykit.errors import RecipeError
from alloykit.methods import get_method
from alloykit.recipe import (
    load_recipe,
    relative_depth,
    resolve_parameters,
    slice_index_outside_layers,
)

ATTN = "model.layers.1.self_attn.q_proj.weight"
MLP = "model.layers.1.mlp.up_proj.weight"


def ties_slices(model_params=None, slice_params=None, top_params=None):
    piece = {
        "sources": [
            {"model": "base", "layer_range": [0, 4]},
            {"model": "ft", "layer_range": [0, 4], "parameters": model_params or {}},
        ],
        "parameters": slice_params or {},
    }
    return load_recipe(
        {
            "merge_method": "ties",
            "base_model": "base",
            "slices": [piece],
            "parameters": {"weight": 1.0} if top_params is None else top_params,
        }
    )


def resolve_ft(recipe, tensor=ATTN, t=0.0, **kwargs):
    ft = recipe.slices[0].sources[1]
    return resolve_parameters(
        recipe,
        get_method("ties"),
        tensor_name=tensor,
        t=t,
        slice_index=0,
        model_input=ft,
        **kwargs,
    )


def test_method_defaults_fill_parameters_the_recipe_does_not_set():
    values = resolve_ft(ties_slices())
    assert values == {
        "weight": 1.0,
        "density": 1.0,
        "normalize": True,
        "int8_mask": False,
        "lambda": 1.0,
    }


def test_model_level_beats_slice_level_and_top_level():
    recipe = ties_slices({"density": 0.1}, {"density": 0.2}, {"weight": 1, "density": 0.3})
    assert resolve_ft(recipe)["density"] == 0.1


def test_slice_level_beats_top_level():
    recipe = ties_slices({}, {"density": 0.2}, {"weight": 1, "density": 0.3})
    assert resolve_ft(recipe)["density"] == 0.2


def test_top_level_beats_the_method_default():
    recipe = ties_slices({}, {}, {"weight": 1, "density": 0.3})
    assert resolve_ft(recipe)["density"] == 0.3


def test_level_whose_filters_do_not_match_defers_to_the_next_level():
    recipe = ties_slices({"density": [{"filter": "mlp", "value": 0.1}]}, {"density": 0.2})
    assert resolve_ft(recipe, MLP)["density"] == 0.1
    assert resolve_ft(recipe, ATTN)["density"] == 0.2


def test_global_parameters_come_from_slice_then_top_level():
    recipe = ties_slices({}, {"lambda": 0.5}, {"weight": 1, "lambda": 2.0, "normalize": False})
    values = resolve_ft(recipe)
    assert (values["lambda"], values["normalize"]) == (0.5, False)


def test_gradient_is_read_at_the_given_t():
    recipe = ties_slices({"density": [0.0, 1.0]})
    assert resolve_ft(recipe, t=0.25)["density"] == pytest.approx(0.25)


def test_per_model_filters_see_the_input_tensor_name():
    recipe = ties_slices({"density": [{"filter": "layers.9.", "value": 0.1}, {"value": 0.9}]})
    values = resolve_ft(recipe, input_tensor_name="model.layers.9.self_attn.q_proj.weight")
    assert values["density"] == 0.1


def test_base_model_takes_only_global_parameters():
    recipe = ties_slices()
    base = recipe.slices[0].sources[0]
    values = resolve_parameters(
        recipe, get_method("ties"), tensor_name=ATTN, t=0.0, slice_index=0, model_input=base
    )
    assert set(values) == {"normalize", "int8_mask", "lambda"}


def test_without_a_model_only_global_parameters_are_resolved():
    recipe = load_recipe(
        {"merge_method": "linear", "models": ["a", "b"], "parameters": {"normalize": False}}
    )
    values = resolve_parameters(
        recipe, get_method("linear"), tensor_name=ATTN, t=0.0, slice_index=None, model_input=None
    )
    assert values == {"normalize": False}


def test_models_recipe_resolves_per_model_values_without_a_slice():
    recipe = load_recipe(
        {"merge_method": "linear", "models": [{"model": "a", "parameters": {"weight": 0.3}}, "b"]}
    )
    method = get_method("linear")
    a, b = recipe.models
    kwargs = {"tensor_name": ATTN, "t": 0.0, "slice_index": None}
    assert resolve_parameters(recipe, method, model_input=a, **kwargs)["weight"] == 0.3
    assert resolve_parameters(recipe, method, model_input=b, **kwargs)["weight"] == 1.0


def test_required_value_missing_for_a_tensor_is_a_recipe_error():
    recipe = ties_slices({"weight": [{"filter": "mlp", "value": 1.0}]}, top_params={})
    with pytest.raises(RecipeError, match=r"slices\[0\]\.sources\[1\]\.parameters\.weight"):
        resolve_ft(recipe, ATTN)


def test_integer_parameter_gradient_must_land_on_whole_numbers():
    recipe = load_recipe(
        {"merge_method": "choosy", "models": [{"model": "a", "parameters": {"k": [1, 2]}}, "b"]}
    )
    method = get_method("choosy")
    kwargs = {"tensor_name": ATTN, "slice_index": None, "model_input": recipe.models[0]}
    assert resolve_parameters(recipe, method, t=1.0, **kwargs)["k"] == 2
    with pytest.raises(RecipeError, match=r"models\[0\]\.parameters\.k: expected an integer"):
        resolve_parameters(recipe, method, t=0.5, **kwargs)


@pytest.mark.parametrize(
    ("offset", "num_layers", "expected"),
    [(0, 40, 0.0), (13, 40, 13 / 39), (39, 40, 1.0), (2, 5, 0.5), (0, 1, 1.0)],
)
def test_block_depth_is_offset_within_the_slice_over_its_length_minus_one(
    offset, num_layers, expected
):
    assert relative_depth(offset, num_layers) == expected


def test_tensors_outside_the_blocks_are_at_depth_zero():
    assert relative_depth(None, 32) == 0.0


def test_tensors_before_the_blocks_use_the_first_slice_and_after_them_the_last():
    recipe = load_recipe(
        {
            "merge_method": "passthrough",
            "slices": [
                {"sources": [{"model": "a", "layer_range": [0, 8]}]},
                {"sources": [{"model": "a", "layer_range": [4, 12]}]},
                {"sources": [{"model": "b", "layer_range": [8, 16]}]},
            ],
        }
    )
    assert slice_index_outside_layers(recipe, after_layers=False) == 0
    assert slice_index_outside_layers(recipe, after_layers=True) == 2


def test_models_recipe_has_no_slice_for_tensors_outside_the_blocks():
    recipe = load_recipe({"merge_method": "linear", "models": ["a"]})
    assert slice_index_outside_layers(recipe, after_layers=True) is None
