"""The parity benchmark's own logic: recipe binding, tensor and config comparison, verdicts.

The benchmark itself needs a mergekit venv and minutes of CPU; these checks need neither.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import mergekit_parity as parity
from mergekit_parity import CASES, FAMILIES
from parity_recipes import bind

from alloykit.errors import RecipeError
from alloykit.methods import method_names
from alloykit.recipe import load_recipe


def test_bind_replaces_model_placeholders_everywhere() -> None:
    recipe = {"base_model": "@base", "models": [{"model": "@ft1", "parameters": {"w": 1}}]}
    bound = bind(recipe, {"base": "/m/base", "ft1": "/m/ft1"})
    assert bound == {
        "base_model": "/m/base",
        "models": [{"model": "/m/ft1", "parameters": {"w": 1}}],
    }


def test_case_names_are_unique() -> None:
    names = [case.name for case in CASES]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_every_recipe_is_a_valid_alloykit_recipe(case) -> None:
    assert case.method in method_names()
    paths = {name: f"/models/{name}" for name in ("base", "ft1", "ft2", "ft3")}
    if case.invalid:
        with pytest.raises(RecipeError):
            load_recipe(bind(case.recipe, paths))
    else:
        load_recipe(bind(case.recipe, paths))


def test_identical_outputs_match_exactly() -> None:
    tensors = {"a": torch.randn(4, 3), "b": torch.randn(5)}
    comparison = parity.compare_tensors(tensors, {k: v.clone() for k, v in tensors.items()})
    assert (comparison.compared, comparison.max_abs, comparison.beyond) == (2, 0.0, [])


def test_a_float32_difference_above_1e5_relative_is_beyond_tolerance() -> None:
    reference = {"w": torch.tensor([1.0, 2.0])}
    comparison = parity.compare_tensors(reference, {"w": torch.tensor([1.0, 2.0001])})
    assert comparison.beyond == ["w"]
    assert comparison.max_rel == pytest.approx(5e-5, rel=1e-2)


def test_a_one_ulp_bfloat16_difference_is_within_tolerance() -> None:
    reference = {"w": torch.tensor([1.0, 2.0], dtype=torch.bfloat16)}
    candidate = {"w": torch.tensor([1.0, 2.015625], dtype=torch.bfloat16)}
    assert parity.compare_tensors(reference, candidate).beyond == []


def test_missing_tensors_and_shape_or_dtype_mismatches_are_problems() -> None:
    reference = {"a": torch.zeros(2), "b": torch.zeros(2), "c": torch.zeros(2)}
    candidate = {"b": torch.zeros(3), "c": torch.zeros(2, dtype=torch.float16)}
    problems = parity.compare_tensors(reference, candidate).problems
    assert len(problems) == 3
    assert problems[0] == "missing in alloykit: a"


def test_config_differences_ignore_the_transformers_version() -> None:
    reference = {"num_hidden_layers": 5, "transformers_version": "1"}
    candidate = {"num_hidden_layers": 4, "transformers_version": "2"}
    assert parity.config_differences(reference, candidate) == [
        "config num_hidden_layers: alloykit 4, mergekit 5"
    ]


def test_change_statistics_count_entries_that_moved_from_the_base() -> None:
    base = {"w": torch.zeros(4)}
    changed, norm = parity.change_statistics({"w": torch.tensor([3.0, 0.0, 4.0, 0.0])}, base)
    assert (changed, norm) == (0.5, 5.0)


def test_every_case_names_a_known_family() -> None:
    assert {case.family for case in CASES} <= set(FAMILIES)


def test_the_suite_translates_mergekit_tests_examples_and_modules() -> None:
    names = [case.name for case in CASES]
    assert sum(name.startswith("mk-test ") for name in names) >= 40
    assert sum(name.startswith("mk-example ") for name in names) == 6
    assert any(case.recipe.get("modules") for case in CASES)


def test_a_half_precision_difference_that_vanishes_in_float32_is_a_compute_dtype_verdict(
    monkeypatch,
) -> None:
    case = CASES[0].__class__("ties half", {"merge_method": "ties", "dtype": "bfloat16"})
    half = parity.CaseResult(case, "DIFFERS", True, "3/39 tensors beyond tolerance")
    seen = []

    def float32_run(twin, context):
        seen.append(twin.recipe["dtype"])
        return parity.CaseResult(twin, "match", False, max_rel=1e-7)

    monkeypatch.setattr(parity, "run_case", float32_run)
    result = parity.rejudge_in_float32(case, None, half)
    assert seen == ["float32"]
    assert (result.verdict, result.failed) == ("bfloat16 compute only", False)


def test_a_difference_that_stays_in_float32_still_fails(monkeypatch) -> None:
    case = CASES[0].__class__("ties half", {"merge_method": "ties", "dtype": "bfloat16"})
    half = parity.CaseResult(case, "DIFFERS", True, "3/39 tensors beyond tolerance")
    monkeypatch.setattr(
        parity, "run_case", lambda twin, context: parity.CaseResult(twin, "DIFFERS", True, "x")
    )
    result = parity.rejudge_in_float32(case, None, half)
    assert (result.verdict, result.failed) == ("DIFFERS", True)


def test_llava_legacy_names_are_compared_under_the_current_layout() -> None:
    assert parity.current_name("language_model.model.layers.0.mlp.up_proj.weight") == (
        "model.language_model.layers.0.mlp.up_proj.weight"
    )
    assert parity.current_name("language_model.lm_head.weight") == "lm_head.weight"
    assert parity.current_name("model.layers.0.mlp.up_proj.weight") == (
        "model.layers.0.mlp.up_proj.weight"
    )
