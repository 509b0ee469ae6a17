"""End-to-end: recipes through the CLI and API on tiny models of several families."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import pytest
import torch
import yaml
from method_recipes import recipe_for
from safetensors.torch import load_file
from typer.testing import CliRunner

import alloykit
from alloykit.cli import app
from alloykit.methods import all_methods, get_method

runner = CliRunner()


def write_recipe(path: Path, recipe: dict) -> Path:
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def load_output(out: Path) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for shard in sorted(out.glob("*.safetensors")):
        tensors.update(load_file(shard))
    return tensors


def assert_loads_and_runs(out: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out)
    with torch.no_grad():
        logits = model(torch.arange(10).unsqueeze(0)).logits
    assert logits.shape[-1] == model.config.vocab_size
    assert bool(torch.isfinite(logits).all())


@pytest.mark.parametrize("method", all_methods(), ids=lambda m: m.name)
def test_every_method_merges_through_the_cli_into_a_loadable_model(method, llama, tmp_path):
    recipe = write_recipe(tmp_path / "r.yml", recipe_for(method, llama))
    out = tmp_path / "out"
    result = runner.invoke(app, ["merge", str(recipe), str(out)])
    assert result.exit_code == 0, result.output
    assert_loads_and_runs(out)
    assert (out / "README.md").read_text().count(method.name) >= 1


@pytest.mark.parametrize(
    "family", ["llama", "mistral", "qwen2", "qwen3", "phi3", "gemma", "gemma2", "gpt2"]
)
def test_ties_merge_of_each_family_loads_and_gives_finite_logits(family, family_models, tmp_path):
    models = family_models(family)
    recipe = {
        "merge_method": "ties",
        "base_model": str(models["base"]),
        "models": [
            {"model": str(models[f"ft{i}"]), "parameters": {"weight": 1.0, "density": 0.5}}
            for i in (1, 2, 3)
        ],
        "parameters": {"normalize": True},
    }
    out = tmp_path / "out"
    result = runner.invoke(app, ["merge", str(write_recipe(tmp_path / "r.yml", recipe)), str(out)])
    assert result.exit_code == 0, result.output
    assert_loads_and_runs(out)
    merged = load_output(out)
    base = load_output(models["base"])
    assert set(merged) == set(base)


def test_linear_merge_equals_the_weighted_average(llama, tmp_path):
    recipe = {
        "merge_method": "linear",
        "models": [
            {"model": str(llama["ft1"]), "parameters": {"weight": 1.0}},
            {"model": str(llama["ft2"]), "parameters": {"weight": 3.0}},
        ],
    }
    merged = alloykit.merge_to_state_dict(recipe)
    a, b = load_output(llama["ft1"]), load_output(llama["ft2"])
    for name, tensor in merged.items():
        torch.testing.assert_close(tensor, (a[name] + 3 * b[name]) / 4)


def test_unlisted_base_model_joins_a_linear_merge_as_mergekit_does(llama):
    recipe = {
        "merge_method": "linear",
        "base_model": str(llama["base"]),
        "models": [{"model": str(llama["ft1"])}, {"model": str(llama["ft2"])}],
    }
    merged = alloykit.merge_to_state_dict(recipe)
    a, b, base = load_output(llama["ft1"]), load_output(llama["ft2"]), load_output(llama["base"])
    for name, tensor in merged.items():
        torch.testing.assert_close(tensor, (a[name] + b[name] + base[name]) / 3)
    assert any("merged as one more model" in w for w in alloykit.plan(recipe).warnings)


def test_passthrough_slices_renumber_layers_and_update_config(family_models, tmp_path):
    models = family_models("qwen2")
    recipe = {
        "merge_method": "passthrough",
        "slices": [
            {"sources": [{"model": str(models["ft1"]), "layer_range": [0, 2]}]},
            {"sources": [{"model": str(models["ft2"]), "layer_range": [1, 4]}]},
        ],
    }
    out = tmp_path / "out"
    result = runner.invoke(app, ["merge", str(write_recipe(tmp_path / "r.yml", recipe)), str(out)])
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["num_hidden_layers"] == 5
    if "layer_types" in config:
        assert len(config["layer_types"]) == 5
    merged = load_output(out)
    ft1, ft2 = load_output(models["ft1"]), load_output(models["ft2"])
    name = "model.layers.{}.mlp.up_proj.weight"
    assert torch.equal(merged[name.format(1)], ft1[name.format(1)])
    assert torch.equal(merged[name.format(2)], ft2[name.format(1)])
    assert torch.equal(merged[name.format(4)], ft2[name.format(3)])
    assert torch.equal(merged["model.embed_tokens.weight"], ft1["model.embed_tokens.weight"])
    assert torch.equal(merged["lm_head.weight"], ft2["lm_head.weight"])
    assert_loads_and_runs(out)


def test_slices_carry_per_layer_config_entries_of_the_source_layers(family_models, tmp_path):
    models = family_models("gemma2")
    recipe = {
        "merge_method": "passthrough",
        "slices": [
            {"sources": [{"model": str(models["ft1"]), "layer_range": [0, 2]}]},
            {"sources": [{"model": str(models["ft2"]), "layer_range": [1, 4]}]},
        ],
    }
    out = alloykit.merge(recipe, tmp_path / "out")
    source_types = json.loads((models["ft1"] / "config.json").read_text())["layer_types"]
    config = json.loads((out / "config.json").read_text())
    assert config["layer_types"] == [source_types[i] for i in (0, 1, 1, 2, 3)]
    assert config["num_hidden_layers"] == 5
    assert_loads_and_runs(out)


def test_dry_run_prints_plan_and_writes_nothing(llama, tmp_path):
    recipe = {
        "merge_method": "ties",
        "base_model": str(llama["base"]),
        "models": [{"model": str(llama["ft1"]), "parameters": {"density": 0.5}}],
    }
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["merge", str(write_recipe(tmp_path / "r.yml", recipe)), str(out), "--dry-run"]
    )
    assert result.exit_code == 0, result.output
    assert result.output.startswith("summary 39 output tensors")
    assert "estimated peak memory" in result.output.splitlines()[0]
    assert "model.layers.[0-3].mlp.up_proj.weight" in result.output  # grouped
    assert "model.layers.0.mlp.up_proj.weight" not in result.output
    assert not out.exists()
    verbose = runner.invoke(
        app, ["merge", str(tmp_path / "r.yml"), str(out), "--dry-run", "--verbose"]
    )
    assert "model.layers.0.mlp.up_proj.weight  [64, 32]" in verbose.output


def test_random_method_output_is_identical_for_any_thread_count(llama):
    recipe = {
        "merge_method": "dare_ties",
        "base_model": str(llama["base"]),
        "models": [{"model": str(llama[f"ft{i}"]), "parameters": {"density": 0.5}} for i in (1, 2)],
        "seed": 7,
    }
    one = alloykit.merge_to_state_dict(recipe, threads=1)
    four = alloykit.merge_to_state_dict(recipe, threads=4)
    torch.set_num_threads(1)
    try:
        single = alloykit.merge_to_state_dict(recipe, threads=2)
    finally:
        torch.set_num_threads(2)
    other_seed = alloykit.merge_to_state_dict(recipe, seed=8)
    for name in one:
        assert torch.equal(one[name], four[name])
        assert torch.equal(one[name], single[name])
    assert any(not torch.equal(one[n], other_seed[n]) for n in one)


@pytest.mark.parametrize(
    "method", ["ties", "dare_ties", "breadcrumbs_ties", "slerp", "model_stock", "sce"]
)
def test_output_is_the_same_for_any_chunk_size(llama, tmp_path, method, monkeypatch):
    """The engine streams rows; chunks of a few values must give what whole tensors give,
    whether the passes re-read the inputs or hold them."""
    count = 1 if method == "slerp" else 3
    parameters = {"t": 0.4} if method == "slerp" else {"density": 0.5, "weight": 0.5}
    if method in ("model_stock", "sce"):
        parameters = {}
    recipe = {
        "merge_method": method,
        "base_model": str(llama["base"]),
        "models": [
            {"model": str(llama[f"ft{i}"]), "parameters": parameters} for i in range(1, count + 1)
        ],
        "parameters": {"slerp": {"t": 0.4}, "sce": {"select_topk": 0.5}}.get(method, {}),
        "dtype": "float32",
    }
    if method == "slerp":
        recipe["models"][0]["parameters"] = {}
    whole = alloykit.merge_to_state_dict(recipe, chunk_elements=10**9)
    held = alloykit.merge_to_state_dict(recipe, chunk_elements=37)
    monkeypatch.setattr("alloykit.engine.HOLD_BYTES", 0)  # every pass reads from disk
    tiny = alloykit.merge_to_state_dict(recipe, chunk_elements=37)
    written = load_output(alloykit.merge(recipe, tmp_path / "out", chunk_elements=100))
    exact = method not in ("slerp", "model_stock", "sce")  # whole-tensor sums add up per chunk
    for name, tensor in whole.items():
        for other in (held[name], tiny[name], written[name]):
            if exact:
                assert torch.equal(other, tensor), name
            else:
                torch.testing.assert_close(other, tensor, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "method",
    ["linear", "task_arithmetic", "ties", "dare_ties", "breadcrumbs_ties", "della", "model_stock"],
)
def test_bfloat16_inputs_read_as_stored_give_the_staged_result(llama_bf16, method, monkeypatch):
    """bfloat16 checkpoints go to the fused kernels as stored (widened a block at a time);
    the result must equal, to the bit, that of chunks widened to float32 first. (This is the
    torch path's reading; the torch-free lane has its own tests, in test_stored_lane.py.)"""
    from alloykit.engine.tensors import _Inputs

    recipe = recipe_for(get_method(method), llama_bf16)
    if method == "della":
        for item in recipe["models"]:
            item["parameters"] = {"density": 0.6, "epsilon": 0.1}
        recipe["parameters"] = {"rescale_mode": "l1"}
    read_as_stored = []
    stored_chunks = _Inputs._stored_chunks

    def spy(self, *args, **kwargs):
        read_as_stored.append(self.entry.name)
        return stored_chunks(self, *args, **kwargs)

    stacked = []
    hold = _Inputs.hold

    def spy_hold(self, **kwargs):
        hold(self, **kwargs)
        stacked.append(self.stack is not None)

    monkeypatch.setattr(_Inputs, "_stored_chunks", spy)
    monkeypatch.setattr(_Inputs, "hold", spy_hold)
    recipe_merge = functools.partial(alloykit.merge_to_state_dict, raw_path=False)
    results = [recipe_merge(recipe, chunk_elements=c) for c in (37, 10**6)]
    assert len(read_as_stored) >= len(results[0]) - 1  # all but 0-d / non-bfloat16 tensors
    if method not in ("linear", "task_arithmetic", "dare_ties"):  # these make a single pass
        assert stacked and all(stacked)  # inputs held for several passes, as one stack
        monkeypatch.setattr("alloykit.engine.HOLD_BYTES", 0)  # every pass reads from disk
        stacked.clear()
        results.append(recipe_merge(recipe, chunk_elements=37))
        assert stacked and not any(stacked)
    monkeypatch.setattr(_Inputs, "can_stay_stored", lambda self: False)
    staged = recipe_merge(recipe, chunk_elements=37)
    for name, tensor in staged.items():
        for chunk_elements, result in zip((37, 10**6, 37), results, strict=False):
            if method == "model_stock" and chunk_elements != 37:  # dot products add up per chunk
                torch.testing.assert_close(result[name], tensor, rtol=1e-5, atol=1e-6)
            else:
                assert torch.equal(result[name], tensor), name


def test_interrupted_merge_resumes_to_the_same_result(llama, tmp_path):
    recipe = {
        "merge_method": "task_arithmetic",
        "base_model": str(llama["base"]),
        "models": [{"model": str(llama["ft1"])}, {"model": str(llama["ft2"])}],
    }
    out = tmp_path / "out"
    calls = {"n": 0}

    def interrupt_after_five(entry) -> None:
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        alloykit.merge(recipe, out, threads=1, on_done=interrupt_after_five)
    assert not out.exists()
    assert (tmp_path / "out.partial").is_dir()
    finished: list[str] = []
    alloykit.merge(recipe, out, threads=1, on_done=lambda e: finished.append(e.name))
    assert len(finished) < len(alloykit.plan(recipe).entries)
    assert not (tmp_path / "out.partial").exists()
    expected = alloykit.merge_to_state_dict(recipe)
    merged = load_output(out)
    for name, tensor in expected.items():
        assert torch.equal(merged[name], tensor)


def test_of_several_failing_tensors_the_first_in_order_is_reported(llama, monkeypatch):
    """Tensors merge in parallel, so the first to fail in time varies from run to run; the
    error must not: it names the failed tensor that comes first in the execution order."""
    import time

    from alloykit.errors import PlanError

    recipe = {
        "merge_method": "task_arithmetic",
        "base_model": str(llama["base"]),
        "models": [{"model": str(llama["ft1"])}, {"model": str(llama["ft2"])}],
    }
    entries = sorted(alloykit.plan(recipe).entries, key=lambda e: e.nbytes, reverse=True)
    first = entries[0].name

    def fail(plan, entry, *args) -> None:
        if entry.name == first:
            time.sleep(0.3)  # every other tensor fails before this one does
        raise PlanError(f"tensor {entry.name!r} failed", "hint")

    monkeypatch.setattr("alloykit.engine.tensors.merge_entry", fail)
    with pytest.raises(PlanError, match=re.escape(repr(first))):
        alloykit.merge_to_state_dict(recipe, threads=2)


def test_output_is_sharded_with_an_index_when_shards_are_small(llama, tmp_path):
    recipe = {"merge_method": "linear", "models": [{"model": str(llama["ft1"])}]}
    out = alloykit.merge(recipe, tmp_path / "out", out_shard_size="20KB")
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    assert_loads_and_runs(out)


def test_tokenizer_and_generation_files_come_from_the_chosen_source(llama, tmp_path):
    (llama["ft2"] / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 77}))
    recipe = {
        "merge_method": "linear",
        "models": [{"model": str(llama["ft1"])}, {"model": str(llama["ft2"])}],
        "tokenizer_source": str(llama["ft2"]),
        "chat_template": "{% for m in messages %}{{ m['content'] }}{% endfor %}",
    }
    try:
        out = alloykit.merge(recipe, tmp_path / "out")
    finally:
        (llama["ft2"] / "tokenizer_config.json").unlink()
    assert json.loads((out / "tokenizer_config.json").read_text())["model_max_length"] == 77
    assert (out / "chat_template.jinja").read_text().startswith("{% for m")
    assert (out / "generation_config.json").exists()


def test_out_dtype_option_sets_tensor_and_config_dtype(llama, tmp_path):
    recipe = {"merge_method": "linear", "models": [{"model": str(llama["ft1"])}]}
    out = alloykit.merge(recipe, tmp_path / "out", out_dtype="bfloat16")
    merged = load_output(out)
    assert {t.dtype for t in merged.values()} == {torch.bfloat16}
    config = json.loads((out / "config.json").read_text())
    assert config.get("dtype", config.get("torch_dtype")) == "bfloat16"
