"""Every bad recipe is one RecipeError naming the key path (and file and line), with a hint."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alloykit.errors import RecipeError
from alloykit.recipe import load_recipe


def error_of(source: Any) -> RecipeError:
    with pytest.raises(RecipeError) as caught:
        load_recipe(source)
    assert caught.value.exit_code == 2
    assert "\n" not in str(caught.value)
    return caught.value


def ties(**changes: Any) -> dict[str, Any]:
    recipe: dict[str, Any] = {
        "merge_method": "ties",
        "base_model": "base",
        "models": [
            {"model": "base"},
            {"model": "a", "parameters": {"weight": 1.0, "density": 0.5}},
            {"model": "b", "parameters": {"weight": 0.5}},
        ],
    }
    recipe.update(changes)
    return recipe


def slerp_slices(**changes: Any) -> dict[str, Any]:
    recipe: dict[str, Any] = {
        "merge_method": "slerp",
        "base_model": "a",
        "slices": [
            {
                "sources": [
                    {"model": "a", "layer_range": [0, 8]},
                    {"model": "b", "layer_range": [0, 8]},
                ]
            }
        ],
        "parameters": {"t": 0.5},
    }
    recipe.update(changes)
    return recipe


def model_params(**parameters: Any) -> dict[str, Any]:
    models = ties()["models"]
    models[2] = {"model": "b", "parameters": {"weight": 0.5, **parameters}}
    return ties(models=models)


def test_the_baseline_recipes_are_valid():
    load_recipe(ties())
    load_recipe(slerp_slices())


def test_unknown_merge_method_lists_valid_names_and_suggests_the_closest():
    error = error_of(ties(merge_method="tie"))
    assert error.message == "merge_method: unknown merge method 'tie'"
    assert "did you mean 'ties'?" in error.hint
    assert "linear" in error.hint


def test_unknown_parameter_names_its_key_path_and_lists_the_method_parameters():
    error = error_of(model_params(densty=0.5))
    assert error.message.startswith("models[2].parameters.densty: unknown parameter 'densty'")
    assert "did you mean 'density'?" in error.hint
    assert "weight, density, normalize, int8_mask, lambda" in error.hint


def test_out_of_range_value_names_key_path_and_allowed_values():
    error = error_of(model_params(density=1.5))
    assert error.message == "models[2].parameters.density: expected a number in [0, 1], got 1.5"


def test_every_gradient_element_is_checked():
    error = error_of(model_params(density=[0.5, 1.0, -0.1]))
    assert error.message.startswith("models[2].parameters.density[2]: expected a number in [0, 1]")


def test_every_filter_entry_value_is_checked():
    value = [{"filter": "mlp", "value": 0.5}, {"value": [0.2, 3]}]
    error = error_of(model_params(density=value))
    assert error.message.startswith("models[2].parameters.density[1].value[1]: expected a number")


def test_wrong_type_is_reported_with_the_allowed_values():
    error = error_of(ties(parameters={"normalize": "maybe"}))
    assert error.message == "parameters.normalize: expected true or false, got 'maybe'"
    assert "true | false" in error.hint


def test_value_outside_the_choices_lists_them():
    recipe = {"merge_method": "choosy", "models": ["a", "b"], "parameters": {"consensus": "vote"}}
    assert "sum | count" in error_of(recipe).message


def test_global_parameter_at_model_level_asks_to_move_it():
    error = error_of(model_params(normalize=True))
    assert error.message.startswith("models[2].parameters.normalize: 'normalize' is a global")
    assert "top-level parameters" in error.hint


def test_global_parameter_at_slice_source_level_names_the_source():
    recipe = slerp_slices()
    recipe["slices"][0]["sources"][1]["parameters"] = {"t": 0.3}
    assert error_of(recipe).message.startswith("slices[0].sources[1].parameters.t: 't' is a global")


def test_required_per_model_parameter_missing_for_a_model():
    models = ties()["models"]
    models[2] = {"model": "b", "parameters": {"density": 0.5}}
    error = error_of(ties(models=models))
    assert (
        error.message == "models[2].parameters.weight: required by merge method ties but not given"
    )


def test_required_per_model_parameter_may_come_from_the_top_level():
    models = [{"model": "base"}, {"model": "a"}, {"model": "b"}]
    load_recipe(ties(models=models, parameters={"weight": 1.0}))


def test_required_global_parameter_missing():
    error = error_of(slerp_slices(parameters={}))
    assert error.message == "parameters.t: required by merge method slerp but not given"


def test_missing_base_model_for_a_method_that_requires_one():
    recipe = ties()
    del recipe["base_model"]
    error = error_of(recipe)
    assert error.message == "base_model: merge method ties needs a base_model"


def test_base_model_must_be_a_source_of_each_slice():
    error = error_of(slerp_slices(base_model="c"))
    assert error.message.startswith("slices[0].sources: the base model 'c' is not among")


def test_too_many_models_counts_only_those_besides_the_base():
    sources = [{"model": m, "layer_range": [0, 8]} for m in ("a", "b", "c")]
    error = error_of(slerp_slices(slices=[{"sources": sources}]))
    assert error.message == (
        "slices[0].sources: merge method slerp takes exactly 1 model besides the base model, got 2"
    )


def test_too_few_models():
    error = error_of({"merge_method": "choosy", "models": ["a"]})
    assert error.message == "models: merge method choosy takes 2 to 3 models, got 1"


def test_too_many_models_for_passthrough():
    error = error_of({"merge_method": "passthrough", "models": ["a", "b"]})
    assert error.message == "models: merge method passthrough takes exactly 1 model, got 2"


def test_model_listed_twice_in_one_merge():
    error = error_of({"merge_method": "linear", "models": ["a", "b", "a"]})
    assert error.message.startswith("models[2].model: model 'a' is listed twice")


def test_unknown_top_level_key_suggests_the_closest():
    error = error_of({"merge_method": "linear", "models": ["a"], "base_modle": "a"})
    assert error.message == "base_modle: unknown key"
    assert "did you mean 'base_model'?" in error.hint


def test_unknown_key_in_a_models_entry():
    error = error_of({"merge_method": "linear", "models": [{"model": "a", "params": {}}]})
    assert error.message == "models[0].params: unknown key"
    assert "did you mean 'parameters'?" in error.hint


def test_unknown_key_in_a_filter_entry():
    error = error_of(model_params(density=[{"filtr": "mlp", "value": 0.5}]))
    assert error.message == "models[2].parameters.density[0].filtr: unknown key"


def test_filter_entry_without_a_value():
    error = error_of(model_params(density=[{"filter": "mlp"}]))
    assert error.message.startswith("models[2].parameters.density[0].value: required key")


def test_missing_merge_method():
    assert error_of({"models": ["a"]}).message == "merge_method: required key is missing"


def test_models_and_slices_together():
    recipe = slerp_slices(models=["a", "b"])
    assert "either models: or slices:" in error_of(recipe).message


def test_neither_models_nor_slices():
    assert error_of({"merge_method": "linear"}).message == "models: the recipe lists no models"


def test_sources_of_a_slice_must_span_the_same_number_of_layers():
    recipe = slerp_slices()
    recipe["slices"][0]["sources"][1]["layer_range"] = [0, 6]
    error = error_of(recipe)
    assert error.message.startswith("slices[0].sources[1].layer_range: spans 6 layers")


def test_empty_layer_range():
    recipe = slerp_slices()
    recipe["slices"][0]["sources"][0]["layer_range"] = [4, 4]
    error = error_of(recipe)
    assert error.message.startswith("slices[0].sources[0].layer_range: expected [start, end)")


def test_layer_range_needs_two_numbers():
    recipe = slerp_slices()
    recipe["slices"][0]["sources"][0]["layer_range"] = [0, 4, 8]
    assert error_of(recipe).message.startswith("slices[0].sources[0].layer_range: ")


def test_tokenizer_source_and_tokenizer_block_together():
    recipe = {"merge_method": "linear", "models": ["a"], "tokenizer_source": "union"}
    recipe["tokenizer"] = {"source": "union"}
    assert error_of(recipe).message.startswith("tokenizer: give either tokenizer_source:")


def test_base_tokenizer_needs_a_base_model():
    error = error_of({"merge_method": "linear", "models": ["a"], "tokenizer_source": "base"})
    assert error.message == "tokenizer_source: base needs a base_model"


@pytest.mark.parametrize("ref", ["org/model+a+b", "org/model+", "+org/adapter"])
def test_malformed_lora_reference(ref: str):
    error = error_of({"merge_method": "linear", "models": [ref]})
    assert error.message == f"models[0].model: expected MODEL or MODEL+ADAPTER, got '{ref}'"


def test_empty_gradient_list():
    assert error_of(model_params(density=[])).message == "models[2].parameters.density: empty list"


def test_missing_parameter_value():
    error = error_of(model_params(density=None))
    assert error.message == "models[2].parameters.density: no value given"


def test_bad_vocab_mismatch_value():
    recipe = {"merge_method": "linear", "models": ["a"], "vocab_mismatch": "pad"}
    assert error_of(recipe).message.startswith("vocab_mismatch: input should be")


def test_yaml_syntax_error_names_the_file_and_line(tmp_path: Path):
    path = tmp_path / "broken.yaml"
    path.write_text("merge_method: linear\nmodels:\n  - model: a\n   parameters: {weight: 1}\n")
    error = error_of(path)
    assert error.message.startswith(f"{path}, line 4: invalid YAML")


def test_duplicate_key_is_an_error_with_its_line(tmp_path: Path):
    path = tmp_path / "twice.yaml"
    path.write_text("merge_method: linear\nmodels: [a]\nmerge_method: ties\n")
    assert re.match(
        rf"{re.escape(str(path))}, line 3: .*duplicate key 'merge_method'", str(error_of(path))
    )


def test_missing_file_is_named():
    error = error_of(Path("/nonexistent/recipe.yaml"))
    assert error.message == "recipe file not found: /nonexistent/recipe.yaml"


def test_missing_file_given_as_a_string_is_named():
    assert error_of("no-such-recipe.yml").message == "recipe file not found: no-such-recipe.yml"


def test_errors_in_a_file_name_the_file_and_line_of_the_key(tmp_path: Path):
    path = tmp_path / "ties.yaml"
    path.write_text(
        "merge_method: ties\n"
        "base_model: base\n"
        "models:\n"
        "  - model: a\n"
        "    parameters:\n"
        "      weight: 1\n"
        "      density: 1.5\n"
    )
    error = error_of(path)
    assert error.message == (
        f"{path}, line 7: models[0].parameters.density: expected a number in [0, 1], got 1.5"
    )


def test_recipe_must_be_a_mapping():
    assert "must be a mapping" in error_of("- a\n- b\n").message


def test_empty_recipe():
    assert "empty" in error_of("# nothing\n").message


leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 50),
    st.floats(allow_nan=True),
    st.sampled_from(["a", "b", "linear", "ties", "mlp", "union", "base", "a+b", "1e-3", "*", ""]),
)
keys = st.sampled_from(
    (
        *("models", "slices", "sources", "model", "layer_range", "parameters", "weight"),
        *("density", "t", "filter", "value", "base_model", "tokenizer", "source", "lora", 1, None),
    )
)
anything = st.recursive(
    leaf,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=25,
)


@settings(max_examples=150, deadline=None)
@given(
    recipe=st.fixed_dictionaries(
        {"merge_method": st.sampled_from(["linear", "ties", "slerp", "passthrough"])},
        optional={"models": anything, "slices": anything, "parameters": anything},
    )
)
def test_any_malformed_recipe_is_a_recipe_error_never_a_crash(recipe):
    with contextlib.suppress(RecipeError):
        load_recipe(recipe)
