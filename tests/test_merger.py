"""alloykit.Merger: inputs read once and kept, merged again with new parameters, into fresh
tensors or a live model, equal to alloykit.merge's result, with no process-wide side effects."""

from __future__ import annotations

import gc
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import alloykit
from alloykit.checkpoint.resident import TensorSink
from alloykit.errors import AlloyError, NonFiniteError, PlanError

METHODS = [
    "linear",
    "task_arithmetic",
    "ties",
    "dare_ties",
    "dare_linear",
    "breadcrumbs_ties",
    "della",
    "slerp",
    "model_stock",
]
SPARSE = ("ties", "dare_ties", "dare_linear", "breadcrumbs_ties", "della")


def recipe(method: str, models: dict[str, Path], **parameters) -> dict:
    """A float32 recipe for ``method`` over the tiny family ``models``."""
    fts = ["ft1", "ft2"] if method in ("slerp",) else ["ft1", "ft2", "ft3"]
    listed = [{"model": str(models[ft])} for ft in fts]
    if method in SPARSE:
        for i, item in enumerate(listed):
            item["parameters"] = {"weight": 0.5 + 0.1 * i, "density": 0.6}
    if method == "linear":
        for i, item in enumerate(listed):
            item["parameters"] = {"weight": 1.0 + i}
    found: dict = {"merge_method": method, "models": listed, "dtype": "float32"}
    if method == "slerp":
        found["base_model"] = str(models["ft1"])
        found["parameters"] = {"t": 0.3}
    elif method != "linear":
        found["base_model"] = str(models["base"])
    found["parameters"] = {**found.get("parameters", {}), **parameters}
    return found


def assert_same(merged: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert merged.keys() == expected.keys()
    for name, tensor in expected.items():
        assert merged[name].dtype == tensor.dtype, name
        assert torch.equal(merged[name].cpu(), tensor), name


@pytest.mark.parametrize("method", METHODS)
def test_a_merge_equals_alloykit_merge_bit_for_bit(method, llama):
    the_recipe = recipe(method, llama)
    expected = alloykit.merge_to_state_dict(the_recipe, seed=7)
    assert_same(alloykit.Merger(the_recipe, seed=7).merge(), expected)


@pytest.mark.parametrize(
    ("method", "parameters"),
    [
        ("task_arithmetic", {"lambda": 0.4}),
        ("ties", {"lambda": 1.3}),
        ("dare_ties", {"lambda": 0.8}),
        ("slerp", {"t": 0.8}),
    ],
)
def test_a_re_merge_with_new_parameters_equals_a_fresh_merge(method, parameters, llama):
    merger = alloykit.Merger(recipe(method, llama))
    merger.merge()
    changed = recipe(method, llama, **parameters)
    assert_same(merger.merge(changed), alloykit.merge_to_state_dict(changed))


def test_per_model_parameters_can_change_between_merges(llama):
    merger = alloykit.Merger(recipe("ties", llama))
    changed = recipe("ties", llama)
    for item, density in zip(changed["models"], (0.2, 0.9, 0.5), strict=True):
        item["parameters"] = {"weight": density, "density": density}
    assert_same(merger.merge(changed), alloykit.merge_to_state_dict(changed))


@pytest.mark.parametrize("method", ["task_arithmetic", "ties", "dare_ties"])
def test_merges_alternating_between_parameters_each_equal_a_fresh_merge(method, llama):
    """What a Merger keeps from merge to merge (each tensor's views of its resident inputs,
    parameter tensors by value) gives every merge the result of a fresh one, also after a
    recipe that had to be planned again (another vocabulary policy, the same tensors)."""
    merger = alloykit.Merger(recipe(method, llama))
    first, second = recipe(method, llama, **{"lambda": 0.6}), recipe(method, llama)
    second["models"][0]["parameters"] = {"weight": 0.25, "density": 0.4}
    replanned = {**second, "vocab_mismatch": "common_rows"}
    for the_recipe in (first, second, replanned, first, second):
        assert_same(merger.merge(the_recipe), alloykit.merge_to_state_dict(the_recipe))


def test_per_model_parameters_become_one_tensor_per_distinct_values():
    from alloykit.engine.tensors import PARAMETER_CACHE, Staging

    staging, cpu = Staging(), torch.device("cpu")
    weights = staging.parameter((0.1, 0.7), cpu)
    assert weights.dtype == torch.float32 and weights.tolist() == pytest.approx([0.1, 0.7])
    assert staging.parameter((0.1, 0.7), cpu) is weights
    assert staging.parameter((0.7, 0.1), cpu) is not weights
    for value in range(2 * PARAMETER_CACHE):
        staging.parameter((float(value),), cpu)
    assert len(staging.parameters) <= PARAMETER_CACHE


def test_a_random_method_follows_the_recipe_seed(llama):
    merger = alloykit.Merger(recipe("dare_ties", llama))
    reseeded = {**recipe("dare_ties", llama), "seed": 11}
    assert_same(merger.merge(reseeded), alloykit.merge_to_state_dict(reseeded))
    assert any(not torch.equal(merger.merge()[n], t) for n, t in merger.merge(reseeded).items())


def test_a_re_merge_with_new_parameter_values_does_not_plan_again(llama, monkeypatch):
    merger = alloykit.Merger(recipe("ties", llama))

    def refuse(*args, **kwargs):
        raise AssertionError("planned again")

    monkeypatch.setattr("alloykit.merger.make_plan", refuse)
    changed = recipe("ties", llama, **{"lambda": 0.7})
    changed["models"][1]["parameters"] = {"weight": 2.0, "density": 0.3}
    merger.merge(changed)
    with pytest.raises(AssertionError, match="planned again"):
        merger.merge({**changed, "out_dtype": "bfloat16"})


@pytest.mark.parametrize("method", ["linear", "task_arithmetic", "ties", "della", "model_stock"])
def test_merging_leaves_the_resident_inputs_as_they_were(method, llama):
    merger = alloykit.Merger(recipe(method, llama))
    before = {
        ref: {name: tensor.clone() for name, tensor in source.kept.items()}
        for ref, source in merger.sources.items()
    }
    merger.merge()
    merger.merge(recipe(method, llama, **({"lambda": 0.3} if method != "linear" else {})))
    for ref, source in merger.sources.items():
        for name, tensor in source.kept.items():
            assert torch.equal(tensor, before[ref][name]), (ref, name)


def test_resident_inputs_are_stacked_by_output_tensor(llama):
    merger = alloykit.Merger(recipe("task_arithmetic", llama))
    entry = next(e for e in merger.entries if len(e.shape) == 2)
    stacks = {merger.sources[r.model].stacked(r.name)[0].data_ptr() for r in entry.all_inputs}
    slots = [merger.sources[r.model].stacked(r.name)[1] for r in entry.all_inputs]
    assert len(stacks) == 1 and slots == list(range(len(entry.all_inputs)))


def test_a_non_finite_resident_input_is_named_when_the_merger_is_made(llama, tmp_path):
    from safetensors.torch import save_file

    broken = tmp_path / "broken"
    broken.mkdir()
    for path in llama["ft2"].iterdir():
        (broken / path.name).write_bytes(path.read_bytes())
    tensors = load_file(broken / "model.safetensors")
    name = "model.layers.1.mlp.up_proj.weight"
    tensors[name][3, 4] = float("nan")
    save_file(tensors, broken / "model.safetensors", metadata={"format": "pt"})
    the_recipe = recipe("task_arithmetic", {**llama, "ft2": broken})
    with pytest.raises(NonFiniteError, match=rf"tensor '{name}' of model '.*broken' contains NaN"):
        alloykit.Merger(the_recipe)


def test_output_dtypes_other_than_the_compute_dtype_equal_alloykit_merge(llama):
    the_recipe = {**recipe("ties", llama), "out_dtype": "bfloat16"}
    assert_same(alloykit.Merger(the_recipe).merge(), alloykit.merge_to_state_dict(the_recipe))


def test_a_merge_runs_in_the_calling_thread_unless_given_threads(llama):
    seen = []

    def observe(entry) -> None:
        seen.append(threading.current_thread())

    alloykit.Merger(recipe("ties", llama), on_done=observe).merge()
    assert set(seen) == {threading.current_thread()}
    seen.clear()
    alloykit.Merger(recipe("ties", llama), on_done=observe, threads=2).merge()
    assert threading.current_thread() not in seen


def test_merging_reads_no_file(llama, tmp_path):
    copies = {}
    for name in ("base", "ft1", "ft2", "ft3"):
        copies[name] = tmp_path / name
        copies[name].mkdir()
        for path in llama[name].iterdir():
            (copies[name] / path.name).write_bytes(path.read_bytes())
    merger = alloykit.Merger(recipe("task_arithmetic", copies))
    expected = merger.merge()
    for name in ("ft1", "ft2", "ft3"):
        (copies[name] / "model.safetensors").unlink()
    assert_same(merger.merge(), expected)


def test_the_garbage_collector_and_torch_threads_are_left_as_they_were(llama):
    merger = alloykit.Merger(recipe("ties", llama))
    threads = torch.get_num_threads()
    thresholds = gc.get_threshold()
    frozen = gc.get_freeze_count()
    seen = []

    def observe(entry) -> None:
        seen.append((torch.get_num_threads(), gc.get_threshold()))

    merger.options.on_done = observe
    merger.merge()
    assert set(seen) == {(threads, thresholds)}
    assert (torch.get_num_threads(), gc.get_threshold()) == (threads, thresholds)
    assert gc.get_freeze_count() == frozen and gc.isenabled()


def test_a_recipe_with_other_models_is_refused(llama, tmp_path):
    merger = alloykit.Merger(recipe("task_arithmetic", llama))
    other = recipe("task_arithmetic", llama)
    other["models"] = other["models"][:2]
    with pytest.raises(PlanError, match="other inputs"):
        merger.merge(other)
    elsewhere = recipe("task_arithmetic", llama)
    elsewhere["models"][0]["model"] = str(tmp_path)
    with pytest.raises(PlanError, match="did not load"):
        merger.merge(elsewhere)


def test_a_recipe_with_another_method_is_refused(llama):
    merger = alloykit.Merger(recipe("task_arithmetic", llama))
    with pytest.raises(PlanError, match="merge_method 'ties'"):
        merger.merge(recipe("ties", llama))


def test_a_recipe_with_other_output_dtypes_is_refused(llama):
    merger = alloykit.Merger(recipe("task_arithmetic", llama))
    with pytest.raises(PlanError, match="dtype"):
        merger.merge({**recipe("task_arithmetic", llama), "out_dtype": "bfloat16"})


def test_resident_inputs_are_every_used_tensor_once_in_the_compute_dtype(llama):
    merger = alloykit.Merger(recipe("task_arithmetic", llama))
    per_model = sum(t.numel() for t in load_file(llama["base"] / "model.safetensors").values())
    assert merger.resident_bytes == 4 * per_model * 4  # base + 3 models, float32


# -- into a live model ------------------------------------------------------------------------


def load_causal_lm(directory: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(directory, torch_dtype=torch.float32).eval()


def greedy(model, prompt: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.generate(prompt, max_new_tokens=8, do_sample=False, pad_token_id=0)


def test_merge_into_writes_a_live_model_in_place_which_then_generates(llama, tmp_path):
    the_recipe = recipe("ties", llama)
    model = load_causal_lm(llama["base"])
    places = {n: p.data_ptr() for n, p in model.state_dict().items()}
    alloykit.Merger(the_recipe).merge_into(model)
    assert {n: p.data_ptr() for n, p in model.state_dict().items()} == places
    assert_same(
        {n: t for n, t in model.state_dict().items() if n in places},
        alloykit.merge_to_state_dict(the_recipe),
    )
    reloaded = load_causal_lm(alloykit.merge(the_recipe, tmp_path / "out"))
    prompt = torch.tensor([[1, 5, 9, 2]])
    assert torch.equal(greedy(model, prompt), greedy(reloaded, prompt))


def test_merge_into_again_with_new_parameters(llama):
    merger = alloykit.Merger(recipe("task_arithmetic", llama))
    model = load_causal_lm(llama["base"])
    merger.merge_into(model)
    changed = recipe("task_arithmetic", llama, **{"lambda": 0.3})
    merger.merge_into(model, changed)
    assert_same(dict(model.state_dict()), alloykit.merge_to_state_dict(changed))


def test_merge_into_a_model_with_tied_embeddings_writes_the_shared_tensor(family_models):
    gemma = family_models("gemma")
    model = load_causal_lm(gemma["base"])
    assert model.lm_head.weight is model.get_input_embeddings().weight
    the_recipe = recipe("task_arithmetic", gemma)
    alloykit.Merger(the_recipe).merge_into(model)
    expected = alloykit.merge_to_state_dict(the_recipe)
    embed = next(n for n in expected if "embed_tokens" in n)
    assert torch.equal(model.lm_head.weight, expected[embed])


def test_merge_into_a_module_lacking_a_merged_tensor_names_it(llama):
    module = torch.nn.Linear(4, 4)
    with pytest.raises(PlanError, match="no parameter or buffer of that name"):
        alloykit.Merger(recipe("linear", llama)).merge_into(module)


def test_merge_into_a_module_with_a_tensor_the_merge_does_not_make_names_it(llama):
    model = load_causal_lm(llama["base"])
    model.register_parameter("extra_scale", torch.nn.Parameter(torch.ones(3)))
    with pytest.raises(PlanError, match="'extra_scale' is not made by the merge"):
        alloykit.Merger(recipe("linear", llama)).merge_into(model)


def test_merge_into_a_module_of_other_shapes_names_the_tensor(llama, tmp_path):
    from alloykit.tiny_models import build_model

    wider = load_causal_lm(build_model("llama", tmp_path / "wide", hidden_size=48))
    with pytest.raises(PlanError, match="has shape"):
        alloykit.Merger(recipe("linear", llama)).merge_into(wider)


def test_an_unknown_device_is_refused(llama):
    with pytest.raises(AlloyError, match="--device"):
        alloykit.Merger(recipe("linear", llama), device="tpu")


# -- the sink ---------------------------------------------------------------------------------


def test_the_tensor_sink_writes_rows_and_raw_bytes_in_place():
    target = torch.zeros(4, 3)
    sink = TensorSink({"w": target})
    sink.write_rows("w", 1, torch.ones(2, 3))
    sink.write_bytes("w", 3, torch.full((1, 3), 2.0).numpy().tobytes(), 1)
    assert torch.equal(target, torch.tensor([[0.0] * 3, [1.0] * 3, [1.0] * 3, [2.0] * 3]))
