"""Search specs: validation with one-line errors, genes, and the recipe of each point."""

from __future__ import annotations

from pathlib import Path

import pytest

from alloykit.search.space import Space
from alloykit.search.spec import SpecError, load_spec

RECIPE = {
    "merge_method": "ties",
    "base_model": "base",
    "models": [
        {"model": "a", "parameters": {"weight": {"min": 0, "max": 2}, "density": 0.5}},
        {"model": "b", "parameters": {"weight": 1.0, "density": {"min": 0.1, "max": 0.9}}},
    ],
    "parameters": {"lambda": {"min": 0.5, "max": 1.5}},
}


def spec(**overrides):
    return load_spec({"recipe": RECIPE, "tasks": ["t"], **overrides})


def test_every_range_is_a_gene_in_recipe_order() -> None:
    space = Space(spec())
    assert [(g.name, g.low, g.high) for g in space.genes] == [
        ("models[0].weight", 0.0, 2.0),
        ("models[1].density", 0.1, 0.9),
        ("lambda", 0.5, 1.5),
    ]


def test_a_point_becomes_a_plain_recipe() -> None:
    space = Space(spec())
    recipe = space.recipe(space.point([0.25, 0.5, 1.0]))
    assert recipe["models"][0]["parameters"] == {"weight": 0.5, "density": 0.5}
    assert recipe["models"][1]["parameters"] == {"weight": 1.0, "density": 0.5}
    assert recipe["parameters"] == {"lambda": 1.5}
    assert RECIPE["models"][0]["parameters"]["weight"] == {"min": 0, "max": 2}  # left as it was


def test_layer_groups_make_gradients_over_depth() -> None:
    space = Space(spec(layer_groups=3))
    assert [g.name for g in space.genes][:3] == [
        "models[0].weight#0",
        "models[0].weight#1",
        "models[0].weight#2",
    ]
    recipe = space.recipe(space.point([0.0, 0.5, 1.0] + [0.5] * 6))
    assert recipe["models"][0]["parameters"]["weight"] == [0.0, 1.0, 2.0]


def test_filters_get_genes_of_their_own_and_the_rest_the_last() -> None:
    space = Space(spec(filters=["self_attn"]))
    names = [g.name for g in space.genes]
    assert names[:2] == ["models[0].weight@self_attn", "models[0].weight@rest"]
    recipe = space.recipe(space.point([0.0, 1.0] + [0.5] * 4))
    assert recipe["models"][0]["parameters"]["weight"] == [
        {"filter": "self_attn", "value": 0.0},
        {"value": 2.0},
    ]


def test_a_choice_of_methods_drops_the_parameters_a_method_does_not_take() -> None:
    space = Space(spec(methods=["ties", "linear"]))
    assert space.dimensions == len(space.genes) + 1
    linear = space.recipe(space.point([0.5, 0.5, 0.5, 0.99]))
    assert linear["merge_method"] == "linear"
    assert "lambda" not in linear.get("parameters", {})
    assert linear["models"][1]["parameters"] == {"weight": 1.0}
    ties = space.recipe(space.point([0.5, 0.5, 0.5, 0.0]))
    assert ties["merge_method"] == "ties" and ties["parameters"] == {"lambda": 1.0}


def test_units_invert_points() -> None:
    space = Space(spec(methods=["ties", "dare_ties"]))
    point = space.point([0.1, 0.2, 0.3, 0.9])
    assert space.point(space.units(point)) == point


def test_relative_model_paths_resolve_from_the_spec_file(tmp_path: Path) -> None:
    (tmp_path / "base").mkdir()
    (tmp_path / "spec.yml").write_text(
        "recipe:\n  merge_method: linear\n  models:\n"
        "    - model: base\n      parameters: {weight: {min: 0, max: 1}}\ntasks: [t]\n"
    )
    space = Space(load_spec(tmp_path / "spec.yml"))
    assert space.recipe(space.point([0.5]))["models"][0]["model"] == str(tmp_path / "base")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"optimizr": "cma"}, "search spec: optimizr: Extra inputs are not permitted"),
        ({"objective": "per_task", "optimizer": "cma"}, "objective per_task needs"),
        ({"objective": "per_task", "optimizer": "gp"}, "objective per_task needs"),
        ({"tasks": []}, "search spec: tasks:"),
        ({"fitness": {"subset": 0}}, "search spec: fitness.subset:"),
    ],
)
def test_bad_specs_are_one_line_naming_the_key(overrides: dict, message: str) -> None:
    with pytest.raises(SpecError) as error:
        spec(**overrides)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_recipe_with_nothing_to_search_is_refused() -> None:
    plain = {"merge_method": "linear", "models": [{"model": "a"}]}
    with pytest.raises(SpecError, match="nothing to search"):
        Space(load_spec({"recipe": plain, "tasks": ["t"]}))


def test_inverted_bounds_are_refused() -> None:
    recipe = {
        "merge_method": "linear",
        "models": [{"model": "a", "parameters": {"weight": {"min": 2, "max": 1}}}],
    }
    with pytest.raises(
        SpecError, match=r"recipe\.models\[0\]\.parameters\.weight: min 2 is above max 1"
    ):
        Space(load_spec({"recipe": recipe, "tasks": ["t"]}))


def test_a_missing_spec_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="not found"):
        load_spec(tmp_path / "absent.yml")


def test_the_fingerprint_ignores_the_trial_budget() -> None:
    assert spec(trials=10).fingerprint() == spec(trials=20).fingerprint()
    assert spec(seed=1).fingerprint() != spec(seed=2).fingerprint()


def test_points_are_plain_floats_whatever_the_units_type() -> None:
    import numpy as np

    space = Space(spec())
    point = space.point(list(np.array([0.25, 0.5, 1.0])))
    assert all(type(value) is float for value in point.values())


def _one_range(bounds: dict) -> dict:
    return {
        "merge_method": "wudi",
        "base_model": "base",
        "models": [{"model": "a", "parameters": {"weight": 1.0}}],
        "parameters": {"learning_rate": bounds},
    }


def test_a_log_scale_spreads_evenly_in_the_logarithm() -> None:
    space = Space(
        load_spec(
            {"recipe": _one_range({"min": 1e-5, "max": 1e-1, "scale": "log"}), "tasks": ["t"]}
        )
    )
    assert [space.point([u])["learning_rate"] for u in (0.0, 0.25, 0.5, 1.0)] == [
        1e-5,
        1e-4,
        1e-3,
        1e-1,
    ]
    assert space.units({"learning_rate": 1e-3}) == pytest.approx([0.5])
    assert "(log scale)" in space.describe()[0]


def test_small_values_keep_significant_digits() -> None:
    """Rounding keeps five significant digits, not four decimals (which would put a
    ``[1e-5, 1e-3]`` range on a hundred steps and its low end at 0)."""
    space = Space(load_spec({"recipe": _one_range({"min": 1e-5, "max": 1e-3}), "tasks": ["t"]}))
    assert space.point([0.0])["learning_rate"] == 1e-5
    assert space.point([0.123456])["learning_rate"] == pytest.approx(1.3222e-4, abs=1e-12)


@pytest.mark.parametrize(
    ("bounds", "message"),
    [
        ({"min": 0, "max": 1, "scale": "log"}, "a log scale needs min above 0"),
        ({"min": 1, "max": 2, "scale": "cubic"}, "'cubic' is not a scale"),
    ],
)
def test_bad_scales_are_one_line(bounds: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message) as error:
        Space(load_spec({"recipe": _one_range(bounds), "tasks": ["t"]}))
    assert "recipe.parameters.learning_rate" in str(error.value) and "\n" not in str(error.value)


def test_models_sharing_a_yaml_anchor_get_values_of_their_own() -> None:
    """``parameters: &w {...}`` then ``parameters: *w`` is one object in the loaded YAML; each
    model's searched weight must still be written to that model alone."""
    import yaml

    text = """
recipe:
  merge_method: task_arithmetic
  base_model: base
  models:
    - model: a
      parameters: &w {weight: {min: 0, max: 2}}
    - model: b
      parameters: *w
tasks: [t]
"""
    space = Space(load_spec(yaml.safe_load(text)))
    recipe = space.recipe(space.point([0.0, 1.0]))
    assert [m["parameters"]["weight"] for m in recipe["models"]] == [0.0, 2.0]


def test_the_worked_example_of_the_docs_is_a_valid_spec() -> None:
    """docs/search.md's spec loads, has the genes it describes, and its recipes plan."""
    import re

    import yaml

    import alloykit

    root = Path(__file__).resolve().parents[2]
    text = (root / "docs" / "search.md").read_text()
    block = re.search(r"```yaml\n(# spec\.yml.*?)```", text, re.S)
    assert block is not None
    spec = load_spec({**yaml.safe_load(block.group(1)), "base_dir": root})
    space = Space(spec)
    # 4 weights and the learning rate, each for self_attn, mlp and the rest, over 2 groups
    assert space.dimensions == 5 * 3 * 2
    assert [g.log for g in space.genes].count(True) == 6
    alloykit.plan(space.recipe(space.point([0.5] * space.dimensions)))
