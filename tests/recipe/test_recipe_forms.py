"""load_recipe accepts every form of mergekit's recipe format, unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest

from alloykit.recipe import ConditionalValue, load_recipe
from alloykit.recipe.model import TokenizerSettings, TokenSource

LINEAR_SOUP = """
models:
  - model: psmathur/orca_mini_v3_13b
    parameters:
      weight: 1.0
  - model: WizardLM/WizardLM-13B-V1.2
    parameters:
      weight: 0.3
  - model: garage-bAInd/Platypus2-13B
    parameters:
      weight: 0.5
merge_method: linear
dtype: float16
"""

TIES = """
models:
  - model: psmathur/orca_mini_v3_13b
    parameters:
      density: [1, 0.7, 0.1]
      weight: 1.0
  - model: garage-bAInd/Platypus2-13B
    parameters:
      density: 0.5
      weight: [0, 0.3, 0.7, 1]
  - model: WizardLM/WizardMath-13B-V1.0
    parameters:
      density: 0.33
      weight:
        - filter: mlp
          value: 0.5
        - value: 0
merge_method: ties
base_model: TheBloke/Llama-2-13B-fp16
parameters:
  normalize: true
  int8_mask: true
dtype: float16
"""

GRADIENT_SLERP = """
slices:
  - sources:
      - model: psmathur/orca_mini_v3_13b
        layer_range: [0, 40]
      - model: garage-bAInd/Platypus2-13B
        layer_range: [0, 40]
merge_method: slerp
base_model: psmathur/orca_mini_v3_13b
parameters:
  t:
    - filter: self_attn
      value: [0, 0.5, 0.3, 0.7, 1]
    - filter: mlp
      value: [1, 0.5, 0.7, 0.3, 0]
    - value: 0.5
dtype: bfloat16
"""

FRANKENMERGE = """
slices:
  - sources:
    - model: mistralai/Mistral-7B-v0.1
      layer_range: [0, 24]
  - sources:
    - model: mistralai/Mistral-7B-v0.1
      layer_range: [8, 32]
merge_method: passthrough
dtype: float16
"""


def test_linear_soup_keeps_models_in_order_with_their_weights():
    recipe = load_recipe(LINEAR_SOUP)
    assert recipe.merge_method == "linear"
    assert [m.model for m in recipe.models] == [
        "psmathur/orca_mini_v3_13b",
        "WizardLM/WizardLM-13B-V1.2",
        "garage-bAInd/Platypus2-13B",
    ]
    weights = [m.parameters["weight"].entries for m in recipe.models]
    assert weights == [(ConditionalValue(1.0),), (ConditionalValue(0.3),), (ConditionalValue(0.5),)]
    assert recipe.slices is None
    assert recipe.dtype == "float16"


def test_ties_recipe_keeps_gradients_filters_and_global_parameters():
    recipe = load_recipe(TIES)
    first, second, third = recipe.models
    assert first.parameters["density"].entries == (ConditionalValue((1.0, 0.7, 0.1)),)
    assert second.parameters["weight"].entries == (ConditionalValue((0.0, 0.3, 0.7, 1.0)),)
    assert third.parameters["weight"].entries == (
        ConditionalValue(0.5, "mlp"),
        ConditionalValue(0.0),
    )
    assert recipe.base_model == "TheBloke/Llama-2-13B-fp16"
    assert recipe.parameters["int8_mask"].entries == (ConditionalValue(True),)


def test_key_paths_name_where_each_setting_came_from():
    recipe = load_recipe(TIES)
    assert recipe.models[2].key_path == "models[2]"
    assert recipe.models[2].parameters["weight"].key_path == "models[2].parameters.weight"
    assert recipe.parameters["normalize"].key_path == "parameters.normalize"


def test_slerp_slices_recipe_keeps_layer_ranges_and_filtered_gradient():
    recipe = load_recipe(GRADIENT_SLERP)
    assert recipe.models is None
    (piece,) = recipe.slices
    assert [s.layer_range for s in piece.sources] == [(0, 40), (0, 40)]
    assert piece.num_layers == 40
    assert piece.sources[1].key_path == "slices[0].sources[1]"
    assert [e.filter for e in recipe.parameters["t"].entries] == ["self_attn", "mlp", None]


def test_passthrough_frankenmerge_keeps_each_slice_separately():
    recipe = load_recipe(FRANKENMERGE)
    assert [p.sources[0].layer_range for p in recipe.slices] == [(0, 24), (8, 32)]
    assert recipe.model_references() == ["mistralai/Mistral-7B-v0.1"]


def test_a_bare_string_is_a_models_entry_without_parameters():
    recipe = load_recipe({"merge_method": "linear", "models": ["org/a", "org/b"]})
    assert [(m.model, m.parameters) for m in recipe.models] == [("org/a", {}), ("org/b", {})]


def test_mergekit_dict_model_reference_becomes_a_string():
    recipe = load_recipe(
        {
            "merge_method": "linear",
            "models": [
                {"model": {"model": {"path": "org/a"}}},
                {"model": {"model": {"path": "org/b", "revision": "v2"}}},
                {"model": {"path": "./local/c"}},
            ],
        }
    )
    assert [m.model for m in recipe.models] == ["org/a", "org/b@v2", "./local/c"]


def test_model_plus_adapter_reference_is_kept():
    recipe = load_recipe({"merge_method": "linear", "models": ["org/model+org/adapter"]})
    assert recipe.models[0].model == "org/model+org/adapter"


def test_mergekit_dict_lora_reference_becomes_model_plus_adapter():
    ref = {"model": {"path": "org/model"}, "lora": {"path": "org/adapter"}}
    recipe = load_recipe({"merge_method": "linear", "models": [{"model": ref}]})
    assert recipe.models[0].model == "org/model+org/adapter"


def test_revision_suffix_is_kept_in_the_reference():
    recipe = load_recipe({"merge_method": "linear", "models": ["org/a@main", "org/b"]})
    assert recipe.models[0].model == "org/a@main"


def test_a_single_filter_entry_may_be_given_without_a_list():
    recipe = load_recipe(
        {
            "merge_method": "linear",
            "models": [{"model": "a", "parameters": {"weight": {"filter": "mlp", "value": 2}}}],
        }
    )
    assert recipe.models[0].parameters["weight"].entries == (ConditionalValue(2.0, "mlp"),)


def test_filter_value_may_itself_be_a_gradient():
    recipe = load_recipe(GRADIENT_SLERP)
    assert recipe.parameters["t"].entries[0].value == (0.0, 0.5, 0.3, 0.7, 1.0)


def test_slice_level_parameters_and_base_model_are_kept():
    recipe = load_recipe(
        {
            "merge_method": "slerp",
            "slices": [
                {
                    "sources": [
                        {"model": "a", "layer_range": [0, 4]},
                        {"model": "b", "layer_range": [0, 4]},
                    ],
                    "base_model": "b",
                    "parameters": {"t": 0.25},
                }
            ],
        }
    )
    assert recipe.slices[0].base_model == "b"
    assert recipe.base_model_for(0) == "b"
    assert recipe.slices[0].parameters["t"].key_path == "slices[0].parameters.t"


def test_scientific_notation_string_is_a_number_as_in_mergekit():
    recipe = load_recipe(
        "merge_method: linear\nmodels:\n  - {model: a, parameters: {weight: 1e-3}}"
    )
    assert recipe.models[0].parameters["weight"].entries == (ConditionalValue(0.001),)


def test_zero_and_one_are_booleans_for_boolean_parameters():
    recipe = load_recipe(
        {"merge_method": "linear", "models": ["a"], "parameters": {"normalize": 0}}
    )
    assert recipe.parameters["normalize"].entries == (ConditionalValue(False),)


def test_integers_become_floats_for_float_parameters():
    recipe = load_recipe(
        {"merge_method": "linear", "models": [{"model": "a", "parameters": {"weight": 2}}]}
    )
    (entry,) = recipe.models[0].parameters["weight"].entries
    assert entry.value == 2.0 and isinstance(entry.value, float)


def test_top_level_options_are_kept():
    recipe = load_recipe(
        {
            "merge_method": "ties",
            "base_model": "base",
            "models": [{"model": "a", "parameters": {"weight": 1}}],
            "out_dtype": "bfloat16",
            "tokenizer_source": "base",
            "chat_template": "chatml",
            "vocab_mismatch": "common_rows",
            "seed": 7,
        }
    )
    assert recipe.out_dtype == "bfloat16"
    assert recipe.tokenizer_source == "base"
    assert recipe.chat_template == "chatml"
    assert recipe.vocab_mismatch == "common_rows"
    assert recipe.seed == 7


def test_defaults_when_options_are_absent():
    recipe = load_recipe({"merge_method": "linear", "models": ["a"]})
    assert recipe.parameters == {}
    assert (recipe.dtype, recipe.tokenizer_source, recipe.vocab_mismatch, recipe.seed) == (
        None,
        None,
        "error",
        None,
    )


def test_seed_argument_overrides_the_recipe_seed():
    recipe = load_recipe({"merge_method": "linear", "models": ["a"], "seed": 7}, seed=3)
    assert recipe.seed == 3


def test_tokenizer_source_may_name_a_model():
    recipe = load_recipe({"merge_method": "linear", "models": ["a", "b"], "tokenizer_source": "b"})
    assert recipe.tokenizer_source == "b"


def test_tokenizer_block_with_source_is_accepted():
    recipe = load_recipe(
        {"merge_method": "linear", "models": ["a"], "tokenizer": {"source": "org/tok"}}
    )
    assert recipe.tokenizer_source == "org/tok"


def test_tokenizer_block_defaults_to_union_as_in_mergekit():
    recipe = load_recipe({"merge_method": "linear", "models": ["a"], "tokenizer": {}})
    assert recipe.tokenizer == TokenizerSettings("union")


def test_tokenizer_block_keeps_token_sources_and_padding():
    tokens = {
        "<|im_start|>": {"source": "a"},
        "<|im_end|>": {"source": {"kind": "model_token", "model": "b", "token_id": 2}},
        "<pad>": {"source": {"kind": "zero"}, "force": True},
        "<new>": None,
    }
    recipe = load_recipe(
        {
            "merge_method": "linear",
            "models": ["a", "b"],
            "tokenizer": {"source": "b", "tokens": tokens, "pad_to_multiple_of": 64},
        }
    )
    assert recipe.tokenizer == TokenizerSettings(
        "b",
        {
            "<|im_start|>": TokenSource("model", model="a"),
            "<|im_end|>": TokenSource("model_token", model="b", token_id=2),
            "<pad>": TokenSource("zero", force=True),
            "<new>": TokenSource("auto"),
        },
        64,
    )


def test_recipe_is_read_from_a_path(tmp_path: Path):
    path = tmp_path / "soup.yaml"
    path.write_text(LINEAR_SOUP)
    recipe = load_recipe(path)
    assert recipe.source_file == path
    assert len(recipe.models) == 3


def test_recipe_is_read_from_a_path_given_as_string(tmp_path: Path):
    path = tmp_path / "soup.yml"
    path.write_text(LINEAR_SOUP)
    assert load_recipe(str(path)).source_file == path


def test_raw_keeps_the_yaml_as_given():
    recipe = load_recipe(TIES)
    assert recipe.raw["models"][0]["parameters"]["density"] == [1, 0.7, 0.1]


def test_recipe_objects_are_frozen():
    recipe = load_recipe(LINEAR_SOUP)
    with pytest.raises(AttributeError):
        recipe.merge_method = "ties"  # type: ignore[misc]
