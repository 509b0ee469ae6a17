"""The memory bound of tensors merged whole (SVD methods, WUDI): declared by each contract as a
function of the matrix shape and the model count, counted by the plan's per-entry bound, the
engine's budget and the dry run's estimate alike, and reported when one matrix alone exceeds
the budget."""

from __future__ import annotations

import threading
import time
from math import prod
from types import SimpleNamespace

import pytest
import yaml
from typer.testing import CliRunner

import alloykit
from alloykit import engine
from alloykit.cli.app import app
from alloykit.engine import EngineOptions
from alloykit.engine.memory import (
    _admitted_together,
    budget_warnings,
    estimated_peak_bytes,
)
from alloykit.methods import get_method, working_sets

SVD_METHODS = ("tsv_merge", "iso_c", "iso_cts", "cart", "wudi")
WORKING_SETS = {
    "tsv_merge": working_sets.task_singular_vectors,
    "iso_c": working_sets.isotropic_common,
    "iso_cts": working_sets.isotropic_common_and_specific,
    "cart": working_sets.centred_low_rank,
    "wudi": working_sets.interference_descent,
}


def _recipe(method: str, models, count: int = 2) -> dict:
    recipe: dict = {
        "merge_method": method,
        "models": [{"model": str(models[f"ft{i}"])} for i in range(1, count + 1)],
    }
    if method != "cart":
        recipe["base_model"] = str(models["base"])
    return recipe


def _largest(plan):
    return max(plan.entries, key=lambda e: e.nbytes)


@pytest.mark.parametrize("method", SVD_METHODS)
def test_each_whole_matrix_contract_declares_its_working_set(method):
    assert get_method(method).temporaries is WORKING_SETS[method]


def test_the_svd_working_set_counts_the_copy_the_factors_and_the_workspace():
    k = 512
    workspace = 3 * k * k + working_sets.WORKSPACE_PER_SINGULAR_VALUE * k
    assert working_sets.svd_values(32000, 512) == 32000 * 512 + k * (32000 + 512 + 1) + workspace


@pytest.mark.parametrize("method", ("tsv_merge", "iso_c", "iso_cts", "wudi"))
def test_a_working_set_grows_with_the_model_count(method):
    declared = WORKING_SETS[method]
    sizes = [declared((1408, 512), models) for models in (2, 3, 8)]
    assert sizes == sorted(set(sizes))


def test_cart_holds_one_centred_task_vector_at_a_time():
    assert working_sets.centred_low_rank((1408, 512), 2) == working_sets.centred_low_rank(
        (1408, 512), 8
    )


@pytest.mark.parametrize("method", SVD_METHODS)
def test_a_working_set_grows_with_the_matrix(method):
    declared = WORKING_SETS[method]
    sizes = [declared(shape, 3) for shape in ((512, 512), (1408, 512), (32000, 512))]
    assert sizes == sorted(set(sizes))


@pytest.mark.parametrize("method", SVD_METHODS)
def test_a_tensor_that_is_not_a_matrix_is_bounded_by_its_own_size(method):
    assert WORKING_SETS[method]((512,), 3) <= 6 * 512


@pytest.mark.parametrize("method", ("tsv_merge", "iso_cts", "wudi"))
def test_the_plans_bound_is_staging_plus_the_declared_working_set(llama, method):
    plan = alloykit.plan(_recipe(method, llama))
    entry = _largest(plan)
    numel = prod(entry.shape)
    stored = sum(plan.sources[r.model].tensors[r.name].dtype.itemsize for r in entry.all_inputs)
    staging = numel * (stored + 3 * 4 + entry.dtype.itemsize)  # as stored, stacked, output
    temporaries = 4 * WORKING_SETS[method](tuple(entry.shape), 2)
    assert plan.whole_tensor_bytes(entry) == (staging, temporaries)
    assert plan.working_bytes(entry, 1 << 18) == staging + temporaries


def test_the_plans_bound_grows_by_the_declared_difference_with_another_model(llama):
    one = alloykit.plan(_recipe("tsv_merge", llama, count=1))
    two = alloykit.plan(_recipe("tsv_merge", llama, count=2))
    entry_one, entry_two = _largest(one), _largest(two)
    shape = tuple(entry_one.shape)
    declared = 4 * (
        working_sets.task_singular_vectors(shape, 2) - working_sets.task_singular_vectors(shape, 1)
    )
    stored = one.sources[entry_one.base.model].tensors[entry_one.name].dtype.itemsize
    staging = prod(shape) * (stored + 4)  # one more input, as stored and stacked
    grown = two.working_bytes(entry_two, 1 << 18) - one.working_bytes(entry_one, 1 << 18)
    assert grown == declared + staging


def test_the_estimate_counts_the_temporaries_of_the_whole_tensors_run_at_once(llama):
    plan = alloykit.plan(_recipe("tsv_merge", llama))
    ample = EngineOptions(threads=2, budget_bytes=1 << 40)
    alone = EngineOptions(threads=2, budget_bytes=1)
    order = engine.execution_order(plan.entries)
    first, second = (plan.whole_tensor_bytes(e)[1] for e in order[:2])
    assert estimated_peak_bytes(plan, ample) - estimated_peak_bytes(plan, alone) == second
    assert first >= second


def test_entries_share_the_budget_in_order_and_one_too_large_runs_alone():
    options = EngineOptions(threads=2, budget_bytes=100)
    groups = _admitted_together([150, 60, 40, 30], options)
    assert [list(g) for g in groups] == [[0], [1, 2], [2, 3], [3]]


def test_the_engine_runs_whole_entries_larger_than_the_budget_one_at_a_time():
    entries = [SimpleNamespace(name=f"t{i}", working=150) for i in range(4)]
    plan = SimpleNamespace(working_bytes=lambda entry, chunk: entry.working)
    running, most = [0], [0]
    lock = threading.Lock()

    def run(entry, reserved: int) -> None:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.02)
        with lock:
            running[0] -= 1
        budget.release(reserved)

    budget = engine._Budget(100)
    engine._run_in_order(entries, run, plan, 1, budget, threads=2)
    assert most[0] == 1


def test_a_whole_matrix_larger_than_the_budget_is_reported(llama):
    plan = alloykit.plan(_recipe("iso_cts", llama))
    entry = _largest(plan)
    bound = plan.working_bytes(entry, 1 << 18)
    assert budget_warnings(plan, EngineOptions(budget_bytes=bound)) == []
    (warning,) = budget_warnings(plan, EngineOptions(budget_bytes=bound - 1))
    assert entry.name in warning and "runs alone" in warning and "--memory-budget" in warning


def test_the_dry_run_states_the_whole_matrix_bound_and_the_budget_warning(llama, tmp_path):
    plan = alloykit.plan(_recipe("tsv_merge", llama))
    entry = _largest(plan)
    recipe = tmp_path / "recipe.yml"
    recipe.write_text(yaml.safe_dump(_recipe("tsv_merge", llama)))
    result = CliRunner().invoke(app, ["merge", str(recipe), "--dry-run", "--memory-budget", "10KB"])
    assert result.exit_code == 0, result.output
    shape = "x".join(map(str, entry.shape))
    line = next(line for line in result.output.splitlines() if line.startswith("whole-tensor"))
    assert f"largest {shape} x (2 models + base) ({entry.name}, tsv_merge)" in line
    assert "per worker" in line
    assert "more than the memory budget" in result.output


def test_a_streaming_plan_states_no_whole_matrix_bound(llama, tmp_path):
    recipe = tmp_path / "recipe.yml"
    recipe.write_text(yaml.safe_dump(_recipe("task_arithmetic", llama)))
    result = CliRunner().invoke(app, ["merge", str(recipe), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "whole-tensor" not in result.output
