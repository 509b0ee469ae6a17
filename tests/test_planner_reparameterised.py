"""planner.reparameterised: a recipe that differs only in parameter values (and seed) gets the
plan make_plan would make, without planning again; any other difference is refused (None)."""

from __future__ import annotations

from pathlib import Path

import pytest

from alloykit.methods import Scope, get_method
from alloykit.plan import Plan, PlanOptions
from alloykit.planner import make_plan, reparameterised
from alloykit.recipe import load_recipe
from alloykit.recipe.model import ModelInput
from alloykit.recipe.resolve import resolve_parameters


def models_recipe(llama: dict[str, Path], scale: float, density: float) -> dict:
    """TIES over three models, with filters, gradients and per-model values."""
    return {
        "merge_method": "ties",
        "base_model": str(llama["base"]),
        "models": [
            {
                "model": str(llama[ft]),
                "parameters": {
                    "weight": [{"filter": "mlp", "value": 0.2 + i / 10}, {"value": 1.0}],
                    "density": [density, 1.0 - density / 2],
                },
            }
            for i, ft in enumerate(("ft1", "ft2", "ft3"))
        ],
        "parameters": {
            "lambda": [{"filter": "self_attn", "value": [scale, 2 * scale]}, {"value": scale}]
        },
        "dtype": "float32",
    }


def slices_recipe(llama: dict[str, Path], t: float) -> dict:
    """Slerp over two slices of different depths, with per-slice values."""
    return {
        "merge_method": "slerp",
        "base_model": str(llama["ft1"]),
        "slices": [
            {
                "sources": [
                    {"model": str(llama["ft1"]), "layer_range": [0, 2]},
                    {"model": str(llama["ft2"]), "layer_range": [1, 3]},
                ],
                "parameters": {"t": [t, 1.0 - t]},
            },
            {
                "sources": [
                    {"model": str(llama["ft1"]), "layer_range": [2, 4]},
                    {"model": str(llama["ft2"]), "layer_range": [2, 4]},
                ],
                "parameters": {"t": [{"filter": "mlp", "value": t / 2}, {"value": t}]},
            },
        ],
        "dtype": "float32",
    }


def gradient_recipe(llama: dict[str, Path], scale: float) -> dict:
    """Task arithmetic with a gradient over depth and no filters."""
    return {
        "merge_method": "task_arithmetic",
        "base_model": str(llama["base"]),
        "models": [{"model": str(llama[ft])} for ft in ("ft1", "ft2")],
        "parameters": {"lambda": [scale, 2 * scale, scale / 2], "weight": 0.5},
        "dtype": "float32",
    }


def joined_base_recipe(llama: dict[str, Path], weight: float) -> dict:
    """Linear with a base_model, which is merged as one more model."""
    return {
        "merge_method": "linear",
        "base_model": str(llama["base"]),
        "models": [
            {"model": str(llama["ft1"]), "parameters": {"weight": weight}},
            {"model": str(llama["ft2"]), "parameters": {"weight": 1.0}},
        ],
        "parameters": {"weight": 0.5},
        "dtype": "float32",
    }


def assert_resolved_one_by_one(plan: Plan) -> None:
    """Every entry's values are what resolve_parameters gives for each of its models."""
    recipe, method = plan.recipe, get_method(plan.recipe.merge_method)
    inputs = {m.key_path: m for m in recipe.models or ()}
    for piece in recipe.slices or ():
        inputs.update((s.key_path, s) for s in piece.sources)
    if recipe.base_model is not None:  # merged as one more model, with no values of its own
        inputs["base_model"] = ModelInput(model=recipe.base_model, key_path="base_model")
    for entry in plan.entries:
        site = plan.parameter_sites[entry.name]
        for position, (key_path, input_name) in enumerate(site.models):
            values = resolve_parameters(
                recipe,
                method,
                tensor_name=site.tensor,
                t=site.t,
                slice_index=site.slice_index,
                model_input=inputs[key_path],
                input_tensor_name=input_name,
            )
            for param in method.params:
                if param.scope is Scope.GLOBAL:
                    assert entry.globals[param.name] == values[param.name]
                else:
                    assert entry.per_model[param.name][position] == values[param.name]


def assert_same_plan(first: dict, second: dict, options: PlanOptions) -> None:
    planned = make_plan(load_recipe(first), options)
    changed = load_recipe(second)
    found = reparameterised(planned, changed, options)
    assert found is not None
    assert_resolved_one_by_one(found)
    expected = make_plan(changed, options)
    assert found.entries == expected.entries
    assert found.seed == expected.seed


def test_filters_gradients_and_per_model_values_are_resolved_again(llama):
    assert_same_plan(models_recipe(llama, 0.8, 0.5), models_recipe(llama, 1.3, 0.7), PlanOptions())


def test_a_gradient_without_filters_is_read_at_each_tensors_depth(llama):
    assert_same_plan(gradient_recipe(llama, 1.0), gradient_recipe(llama, 0.3), PlanOptions())


def test_slices_with_per_slice_values_are_resolved_again(llama):
    assert_same_plan(slices_recipe(llama, 0.3), slices_recipe(llama, 0.9), PlanOptions())


def test_a_base_merged_as_one_more_model_takes_the_new_top_level_value(llama):
    assert_same_plan(joined_base_recipe(llama, 2.0), joined_base_recipe(llama, 0.1), PlanOptions())


def test_a_new_seed_reseeds_every_tensor_of_a_random_method(llama):
    recipe = models_recipe(llama, 1.0, 0.5) | {"merge_method": "dare_ties"}
    assert_same_plan(recipe, recipe | {"seed": 5}, PlanOptions())
    assert_same_plan(recipe, recipe, PlanOptions(seed=9))


@pytest.mark.parametrize(
    "change",
    [
        lambda r: r | {"models": r["models"][:2]},
        lambda r: r | {"out_dtype": "bfloat16"},
        lambda r: r | {"merge_method": "dare_ties"},
        lambda r: r | {"base_model": r["models"][0]["model"]},
    ],
    ids=["fewer models", "output dtype", "method", "base"],
)
def test_a_recipe_that_differs_in_more_than_values_needs_its_own_plan(llama, change):
    recipe = models_recipe(llama, 1.0, 0.5)
    planned = make_plan(load_recipe(recipe), PlanOptions())
    assert reparameterised(planned, load_recipe(change(recipe)), PlanOptions()) is None
