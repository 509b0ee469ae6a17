"""Statistics inputs: a method declares per-model statistics (Gram matrices, Fisher
diagonals), the plan maps them from each model's statistics file, and the engine hands the
kernel the models' statistics of each tensor, stacked ``[n, ...]`` in float32, or ``None``."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from statistics_files import has_gram, write_statistics
from typer.testing import CliRunner

import alloykit
from alloykit.cli.app import app
from alloykit.errors import AlloyError, CheckpointError, PlanError, RecipeError
from alloykit.methods import contract, registry
from alloykit.methods.contract import (
    BasePolicy,
    Form,
    Implementation,
    Method,
    Statistic,
    StatisticShape,
)
from alloykit.plan import STATISTICS_CHUNK_SCALE
from alloykit.recipe import load_recipe

FISHER_AVERAGE = Method(
    name="test_fisher_average",
    summary="Fisher-weighted average (test only).",
    reference="Merging Models with Fisher-Weighted Averaging, Matena & Raffel 2022, "
    "arXiv:2111.09832",
    params=(),
    base=BasePolicy.UNUSED,
    kernel_module=__name__,
    statistics=(Statistic("fisher", StatisticShape.DIAGONAL, fallback="the plain mean"),),
    temporaries=3.0,
)
REGMEAN = Method(
    name="test_regmean",
    summary="Regression mean (test only).",
    reference="Dataless Knowledge Fusion by Merging Weights of Language Models, Jin et al. "
    "2023, arXiv:2212.09849",
    params=(),
    base=BasePolicy.UNUSED,
    kernel_module=__name__,
    statistics=(Statistic("gram", StatisticShape.GRAM, fallback="the plain mean"),),
)
SEEN: list[tuple[str, torch.Tensor | None]] = []


def fisher_average(tensors: torch.Tensor, base: None, *, fisher: torch.Tensor | None):
    SEEN.append(("fisher", fisher))
    if fisher is None:
        return tensors.mean(0)
    return (fisher * tensors).sum(0) / fisher.sum(0)


def regmean(tensors: torch.Tensor, base: None, *, gram: torch.Tensor | None):
    """W* = (sum_i W_i G_i)(sum_i G_i)^-1 for weights [out, in] and Grams [in, in]."""
    SEEN.append(("gram", gram))
    if gram is None:
        return tensors.mean(0)
    total = torch.einsum("noi,nij->oj", tensors, gram)
    return torch.linalg.solve(gram.sum(0), total.T).T


@pytest.fixture(autouse=True)
def test_methods(monkeypatch):
    """The two test methods, declared and implemented for this test only."""
    for method, kernel in ((FISHER_AVERAGE, fisher_average), (REGMEAN, regmean)):
        monkeypatch.setitem(registry._REGISTRY, method.name, method)
        monkeypatch.setitem(contract._IMPLEMENTATIONS, method.name, Implementation(kernel, None))
    SEEN.clear()


@pytest.fixture(scope="module")
def stats(llama, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("statistics")
    return {
        name: write_statistics(llama[name], root / f"{name}.safetensors", seed=i)
        for i, name in enumerate(("ft1", "ft2"))
    }


def _recipe(method: str, llama, stats: dict[str, Path], **entries: dict) -> dict:
    models = []
    for name in ("ft1", "ft2"):
        item = {"model": str(llama[name]), "statistics": str(stats[name])}
        item.update(entries.get(name, {}))
        models.append({k: v for k, v in item.items() if v is not None})
    return {"merge_method": method, "models": models}


def _inputs(llama) -> dict[str, list[np.ndarray]]:
    loaded = [load_file(str(llama[n] / "model.safetensors")) for n in ("ft1", "ft2")]
    return {k: [m[k].double().numpy() for m in loaded] for k in loaded[0]}


def test_fisher_average_weights_each_parameter_by_its_models_fisher(llama, stats):
    merged = alloykit.merge_to_state_dict(_recipe("test_fisher_average", llama, stats))
    fishers = [load_file(str(stats[n])) for n in ("ft1", "ft2")]
    for name, weights in _inputs(llama).items():
        f = [s[f"fisher:{name}"].double().numpy() for s in fishers]
        expected = (f[0] * weights[0] + f[1] * weights[1]) / (f[0] + f[1])
        np.testing.assert_allclose(merged[name].double().numpy(), expected, rtol=1e-5, atol=1e-6)


def test_regmean_solves_with_the_grams_and_falls_back_where_there_are_none(llama, stats):
    merged = alloykit.merge_to_state_dict(_recipe("test_regmean", llama, stats))
    grams = [load_file(str(stats[n])) for n in ("ft1", "ft2")]
    for name, weights in _inputs(llama).items():
        if has_gram(name, weights[0].shape):
            g = [s[f"gram:{name}"].double().numpy() for s in grams]
            total = weights[0] @ g[0] + weights[1] @ g[1]
            expected = total @ np.linalg.inv(g[0] + g[1])
            atol = 1e-4
        else:
            expected, atol = (weights[0] + weights[1]) / 2, 1e-7
        np.testing.assert_allclose(merged[name].double().numpy(), expected, atol=atol, err_msg=name)


def test_kernels_get_float32_stacks_of_one_statistic_per_model_or_none(llama, stats):
    alloykit.merge_to_state_dict(_recipe("test_regmean", llama, stats), threads=1)
    given = [value for kind, value in SEEN if kind == "gram" and value is not None]
    assert given and len(given) < len(SEEN)  # norms and embeddings get None
    for value in given:
        assert value.dtype == torch.float32 and value.shape[0] == 2
        assert value.shape[1] == value.shape[2]


def test_identical_models_with_any_statistics_are_a_fixed_point(llama, tmp_path):
    import shutil

    copy = shutil.copytree(llama["ft1"], tmp_path / "copy")
    models = {"ft1": llama["ft1"], "ft2": copy}
    stats = {n: write_statistics(m, tmp_path / f"{n}.st", seed=i) for i, (n, m) in
             enumerate(models.items())}  # fmt: skip
    merged = alloykit.merge_to_state_dict(_recipe("test_fisher_average", models, stats))
    source = load_file(str(llama["ft1"] / "model.safetensors"))
    for name, tensor in source.items():
        torch.testing.assert_close(merged[name], tensor, rtol=1e-6, atol=1e-7)


def test_the_plan_maps_each_models_statistic_of_each_tensor(llama, stats):
    plan = alloykit.plan(_recipe("test_regmean", llama, stats))
    entry = next(e for e in plan.entries if e.name.endswith("q_proj.weight"))
    refs = entry.statistics["gram"]
    assert [r.model for r in refs] == [str(llama["ft1"]), str(llama["ft2"])]
    assert {r.name for r in refs} == {f"gram:{entry.name}"}
    norm = next(e for e in plan.entries if e.name.endswith("norm.weight"))
    assert norm.statistics == {"gram": (None, None)}


def test_the_whole_tensor_bound_counts_inputs_statistics_output_and_temporaries(llama, stats):
    plan = alloykit.plan(_recipe("test_fisher_average", llama, stats))
    entry = max(plan.entries, key=lambda e: e.nbytes)
    numel = entry.nbytes // entry.dtype.itemsize
    statistics = 2 * numel * 4  # one float32 Fisher per model
    expected = numel * 4 * (2 * 2 + 1 + 3) + 2 * statistics
    assert plan.statistics_bytes(entry) == statistics
    assert plan.working_bytes(entry, 1 << 18) == expected
    assert plan.largest_working(1 << 18) == (entry, expected)


def test_dry_run_shows_statistics_their_bytes_and_the_largest_bound(llama, stats, tmp_path):
    recipe = tmp_path / "recipe.yml"
    import yaml

    recipe.write_text(yaml.safe_dump(_recipe("test_regmean", llama, stats)))
    result = CliRunner().invoke(app, ["merge", str(recipe), "--dry-run", "--verbose"])
    assert result.exit_code == 0, result.output
    assert f"statistics {llama['ft1']} → {stats['ft1']} (fisher, gram)" in result.output
    q_line = next(line for line in result.output.splitlines() if "q_proj.weight" in line)
    assert "+ gram [2 × [" in q_line and "KB" in q_line
    assert "gram none" in next(line for line in result.output.splitlines() if "norm" in line)
    assert "statistics read" in result.output
    assert "largest working set" in result.output
    assert "whole-tensor with statistics" in result.output


def test_a_model_without_statistics_is_refused_naming_its_entry(llama, stats):
    recipe = _recipe("test_regmean", llama, stats, ft2={"statistics": None})
    with pytest.raises(PlanError, match=r"models\[1\]: method 'test_regmean' needs statistics"):
        alloykit.plan(recipe)


def test_data_that_cannot_be_calibrated_names_the_data_key(llama, stats):
    recipe = _recipe("test_regmean", llama, stats, ft2={"statistics": None, "data": "x.jsonl"})
    with pytest.raises(AlloyError, match=r"models\[1\]\.data: calibration data .*not found"):
        alloykit.plan(recipe)


def test_statistics_of_another_model_are_refused_naming_both(llama, stats):
    recipe = _recipe("test_fisher_average", llama, {"ft1": stats["ft1"], "ft2": stats["ft1"]})
    with pytest.raises(CheckpointError) as caught:
        alloykit.plan(recipe)
    message = str(caught.value)
    assert str(stats["ft1"]) in message and str(llama["ft2"]) in message
    assert "models[1].statistics" in message and "\n" not in message


def test_a_key_missing_for_one_model_is_refused(llama, stats, tmp_path):
    name = "model.layers.0.self_attn.q_proj.weight"
    partial = write_statistics(
        llama["ft2"], tmp_path / "partial.st", seed=5, edit=lambda t: t.pop(f"gram:{name}")
    )
    recipe = _recipe("test_regmean", llama, {"ft1": stats["ft1"], "ft2": partial})
    with pytest.raises(PlanError, match=rf"has no 'gram:{name}', which model .* has"):
        alloykit.plan(recipe)


def test_a_statistic_of_the_wrong_shape_is_refused(llama, stats, tmp_path):
    name = "model.layers.0.self_attn.q_proj.weight"

    def shrink(tensors: dict[str, torch.Tensor]) -> None:
        tensors[f"gram:{name}"] = tensors[f"gram:{name}"][:3, :3]

    bad = write_statistics(llama["ft2"], tmp_path / "bad.st", seed=5, edit=shrink)
    recipe = _recipe("test_regmean", llama, {"ft1": stats["ft1"], "ft2": bad})
    with pytest.raises(PlanError, match=rf"'gram:{name}' has shape \[3, 3\], expected"):
        alloykit.plan(recipe)


def test_a_file_without_the_declared_statistic_is_refused(llama, stats, tmp_path):
    fisher_only = write_statistics(llama["ft2"], tmp_path / "f.st", seed=5, kinds=("fisher",))
    recipe = _recipe("test_regmean", llama, {"ft1": stats["ft1"], "ft2": fisher_only})
    with pytest.raises(PlanError, match=r"models\[1\]\.statistics: .* holds no 'gram'"):
        alloykit.plan(recipe)


def test_a_missing_statistics_file_is_refused(llama, stats, tmp_path):
    recipe = _recipe("test_regmean", llama, {"ft1": stats["ft1"], "ft2": tmp_path / "no.st"})
    with pytest.raises(CheckpointError, match=r"models\[1\]\.statistics: .* does not exist"):
        alloykit.plan(recipe)


def test_a_weights_file_is_not_taken_for_statistics(llama, stats):
    weights = llama["ft2"] / "model.safetensors"
    recipe = _recipe("test_regmean", llama, {"ft1": stats["ft1"], "ft2": weights})
    with pytest.raises(CheckpointError, match="not an alloykit statistics file"):
        alloykit.plan(recipe)


def test_relative_statistics_paths_are_relative_to_the_recipe(llama, stats, tmp_path):
    import shutil

    import yaml

    shutil.copy(stats["ft1"], tmp_path / "a.st")
    shutil.copy(stats["ft2"], tmp_path / "b.st")
    recipe = _recipe("test_regmean", llama, {"ft1": Path("a.st"), "ft2": Path("b.st")})
    (tmp_path / "recipe.yml").write_text(yaml.safe_dump(recipe))
    plan = alloykit.plan(tmp_path / "recipe.yml")
    assert plan.statistics[str(llama["ft2"])].path == tmp_path / "b.st"


def test_recipe_entries_keep_statistics_and_data_paths(llama):
    recipe = load_recipe(
        {
            "merge_method": "linear",
            "models": [
                {"model": str(llama["ft1"]), "statistics": "s/a.safetensors"},
                {"model": str(llama["ft2"]), "data": "tasks/qa.jsonl"},
            ],
        }
    )
    assert recipe.models[0].statistics == Path("s/a.safetensors")
    assert recipe.models[1].data == Path("tasks/qa.jsonl")


@pytest.mark.parametrize("key", ["statistics", "data"])
def test_a_statistics_or_data_value_that_is_not_a_path_is_refused(llama, key):
    recipe = {"merge_method": "linear", "models": [{"model": str(llama["ft1"]), key: 3}]}
    with pytest.raises(RecipeError, match=rf"models\[0\]\.{key}: expected a file path"):
        load_recipe(recipe)


def test_a_contract_states_its_form():
    streaming = registry.get_method("linear")
    whole = registry.get_method("ties")
    assert streaming.form is Form.STREAMING
    assert REGMEAN.form is Form.WITH_STATISTICS
    assert whole.form in (Form.STREAMING, Form.WHOLE_TENSOR)


def test_a_streaming_method_with_statistics_must_bring_its_own_merge(monkeypatch):
    streaming = Method(
        "test_streaming_gram", "", "", (), BasePolicy.UNUSED, __name__, streams=True,
        statistics=(Statistic("gram", StatisticShape.GRAM),),
    )  # fmt: skip
    assert streaming.form is Form.STREAMING_WITH_STATISTICS
    monkeypatch.setitem(registry._REGISTRY, streaming.name, streaming)
    with pytest.raises(ValueError, match="register_streaming"):
        registry.register(streaming.name)(regmean)


def test_regmean_streams_with_the_whole_grams_and_rows_of_the_weights(llama, stats):
    assert registry.get_method("regmean").form is Form.STREAMING_WITH_STATISTICS
    recipe = _recipe("regmean", llama, stats)
    whole = alloykit.merge_to_state_dict(recipe, chunk_elements=1 << 30)
    by_rows = alloykit.merge_to_state_dict(recipe, chunk_elements=1)  # one row per chunk
    for name, tensor in whole.items():
        torch.testing.assert_close(by_rows[name], tensor, rtol=1e-6, atol=1e-6, msg=name)


def test_the_streaming_bound_counts_a_chunk_of_each_input_and_the_statistics(llama, stats):
    plan = alloykit.plan(_recipe("regmean", llama, stats))
    entry = next(e for e in plan.entries if e.name.endswith("q_proj.weight"))
    rows = plan.chunk_rows(entry, 1 << 4)
    assert rows == min(entry.shape[0], (1 << 4) * STATISTICS_CHUNK_SCALE // entry.shape[1])
    grams = 2 * entry.shape[1] ** 2 * 4  # one float32 Gram per model
    assert plan.statistics_bytes(entry) == grams
    assert plan.working_bytes(entry, 1 << 4) == rows * entry.shape[1] * 4 * (2 * 2 + 3) + 2 * grams


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_statistics_merge_on_cuda_matches_cpu(llama, stats):
    recipe = _recipe("test_regmean", llama, stats)
    on_cpu = alloykit.merge_to_state_dict(recipe, device="cpu")
    on_gpu = alloykit.merge_to_state_dict(recipe, device="cuda")
    for name, tensor in on_cpu.items():
        torch.testing.assert_close(on_gpu[name], tensor, rtol=1e-4, atol=1e-4, msg=name)


def test_whole_tensor_entries_over_the_budget_run_one_at_a_time(llama, stats, monkeypatch):
    running, most = [0], [0]
    lock = threading.Lock()

    def counting(tensors, base, *, fisher):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.005)
        with lock:
            running[0] -= 1
        return tensors.mean(0)

    monkeypatch.setitem(
        contract._IMPLEMENTATIONS, FISHER_AVERAGE.name, Implementation(counting, None)
    )
    recipe = _recipe("test_fisher_average", llama, stats)
    plan = alloykit.plan(recipe)
    smallest = min(plan.working_bytes(e, 1 << 18) for e in plan.entries)
    alloykit.merge_to_state_dict(recipe, threads=2, memory_budget=smallest)
    assert most == [1]


def test_statistics_of_rows_the_vocabularies_do_not_share_are_refused(llama, stats, tmp_path):
    from alloykit.tiny_models import build_model

    wider = build_model("llama", tmp_path / "wider", seed=1, vocab_size=300)
    wider_stats = write_statistics(wider, tmp_path / "wider.st", seed=3)
    recipe = _recipe("test_fisher_average", {"ft1": llama["ft1"], "ft2": wider},
                     {"ft1": stats["ft1"], "ft2": wider_stats})  # fmt: skip
    recipe["vocab_mismatch"] = "common_rows"
    with pytest.raises(PlanError, match="vocabularies differ and method 'test_fisher_average'"):
        alloykit.plan(recipe)
