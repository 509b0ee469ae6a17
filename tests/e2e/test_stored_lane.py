"""The torch-free raw path (alloykit.engine.raw): bfloat16 merges by linear, task arithmetic,
DARE and Model Stock give the torch path's bits, whatever the chunking, and run without
torch."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import weakref
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import alloykit
from alloykit.engine import raw

LANE_METHODS = ("linear", "task_arithmetic", "dare_ties", "dare_linear", "model_stock")


def _recipe(method: str, models: dict[str, Path], **parameters: object) -> dict:
    weights = (0.3, 0.5, 0.9)
    recipe: dict = {
        "merge_method": method,
        "models": [
            {"model": str(models[f"ft{i + 1}"]), "parameters": {"weight": w}}
            for i, w in enumerate(weights)
        ],
        "parameters": parameters,
    }
    if method != "linear":
        recipe["base_model"] = str(models["base"])
    if method == "model_stock":
        for item in recipe["models"]:
            item["parameters"] = {}
    if method.startswith("dare"):
        for i, item in enumerate(recipe["models"]):
            item["parameters"]["density"] = 0.4 + 0.1 * i
    return recipe


@pytest.fixture
def lane_calls(monkeypatch) -> list[str]:
    """Names of the tensors the lane merged."""
    calls: list[str] = []
    merge_entry = raw.merge_entry

    def spy(plan, entry, *args, **kwargs):
        calls.append(entry.name)
        return merge_entry(plan, entry, *args, **kwargs)

    monkeypatch.setattr(raw, "merge_entry", spy)
    return calls


@pytest.mark.parametrize("method", LANE_METHODS)
@pytest.mark.parametrize("chunk_elements", [37, 10**6])
@pytest.mark.parametrize("out_dtype", [None, "float32"])
def test_the_lane_gives_the_torch_paths_bits(
    llama_bf16, method, chunk_elements, out_dtype, lane_calls
):
    recipe = (
        _recipe(method, llama_bf16, normalize=False)
        if method != "model_stock"
        else (_recipe(method, llama_bf16))
    )
    options = {"chunk_elements": chunk_elements, "out_dtype": out_dtype}
    lane = alloykit.merge_to_state_dict(recipe, **options)
    assert len(lane_calls) == len(lane)  # every tensor of the tiny llama is bfloat16
    torch_path = alloykit.merge_to_state_dict(recipe, raw_path=False, **options)
    assert len(lane_calls) == len(lane)  # the second merge did not use the lane
    for name, tensor in torch_path.items():
        assert lane[name].dtype == tensor.dtype
        assert torch.equal(lane[name], tensor), name


@pytest.mark.parametrize("normalize", [True, False])
def test_linear_and_task_arithmetic_with_normalize_in_the_lane(llama_bf16, normalize, lane_calls):
    for method in ("linear", "task_arithmetic"):
        recipe = _recipe(method, llama_bf16, normalize=normalize)
        lane = alloykit.merge_to_state_dict(recipe, chunk_elements=100)
        torch_path = alloykit.merge_to_state_dict(recipe, chunk_elements=100, raw_path=False)
        for name, tensor in torch_path.items():
            assert torch.equal(lane[name], tensor), name
    assert lane_calls


@pytest.mark.parametrize("method", ["model_stock", "dare_ties"])
def test_inputs_held_or_read_per_pass_give_the_same_merge(
    llama_bf16, monkeypatch, lane_calls, method
):
    """Two-pass merges (Model Stock; DARE with l1 rescaling) hold small tensors' inputs whole;
    read again for each pass instead, they give the same merge."""
    recipe = _recipe(
        method, llama_bf16, **({"rescale_mode": "l1"} if method != "model_stock" else {})
    )
    held = alloykit.merge_to_state_dict(recipe, chunk_elements=37)
    monkeypatch.setattr("alloykit.engine.HOLD_BYTES", 0)
    read_per_pass = alloykit.merge_to_state_dict(recipe, chunk_elements=37)
    for name, tensor in held.items():
        assert torch.equal(read_per_pass[name], tensor), name


def test_other_methods_and_dtypes_take_the_torch_path(llama_bf16, llama, lane_calls):
    ties = _recipe("ties", llama_bf16)
    for item in ties["models"]:
        item["parameters"]["density"] = 0.5
    alloykit.merge_to_state_dict(ties)
    alloykit.merge_to_state_dict(_recipe("linear", llama))  # float32 checkpoints
    alloykit.merge_to_state_dict(_recipe("model_stock", llama_bf16, filter_wise=True))
    assert lane_calls == []


def test_the_lane_writes_a_model_that_resumes_and_loads(llama_bf16, tmp_path, lane_calls):
    recipe = _recipe("task_arithmetic", llama_bf16)
    out = tmp_path / "out"
    calls = {"n": 0}

    def interrupt_after_three(entry) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        alloykit.merge(recipe, out, threads=1, on_done=interrupt_after_three)
    assert not out.exists()
    alloykit.merge(recipe, out, threads=1)
    merged: dict[str, torch.Tensor] = {}
    for shard in sorted(out.glob("*.safetensors")):
        merged.update(load_file(shard))
    expected = alloykit.merge_to_state_dict(recipe, raw_path=False)
    assert merged.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(merged[name], tensor), name


def test_a_non_finite_input_is_named_by_the_lane(llama_bf16, tmp_path, lane_calls):
    from safetensors.torch import save_file

    from alloykit.errors import NonFiniteError

    broken = tmp_path / "broken"
    broken.mkdir()
    for item in Path(llama_bf16["ft2"]).iterdir():
        if item.suffix != ".safetensors":
            (broken / item.name).write_bytes(item.read_bytes())
    tensors = load_file(Path(llama_bf16["ft2"]) / "model.safetensors")
    name = sorted(tensors)[3]
    tensors[name].view(-1)[5] = float("-inf")
    save_file(tensors, broken / "model.safetensors")
    recipe = _recipe("linear", {**llama_bf16, "ft2": broken})
    with pytest.raises(NonFiniteError, match=rf"{name!r} of model .*broken.* infinite values"):
        alloykit.merge_to_state_dict(recipe)
    assert lane_calls


def test_a_linear_merge_of_bfloat16_checkpoints_does_not_import_torch(llama_bf16, tmp_path):
    """The point of the lane: `alloykit merge` of bfloat16 checkpoints by linear, task
    arithmetic or Model Stock never imports torch (about 3 s of start-up here)."""
    recipe = tmp_path / "recipe.yml"
    recipe.write_text(json.dumps(_recipe("model_stock", llama_bf16)))
    script = textwrap.dedent(
        f"""
        import sys
        from alloykit.cli import main
        sys.argv = ["alloykit", "merge", {str(recipe)!r}, {str(tmp_path / "out")!r}]
        try:
            main()
        except SystemExit as stop:
            assert not stop.code, stop.code
        print("torch" in sys.modules)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False"
    assert (tmp_path / "out" / "config.json").is_file()


def test_dare_in_the_lane_is_the_same_for_any_thread_count(llama_bf16, lane_calls):
    recipe = _recipe("dare_ties", llama_bf16, rescale_mode="l1")
    one = alloykit.merge_to_state_dict(recipe, threads=1, chunk_elements=100)
    two = alloykit.merge_to_state_dict(recipe, threads=2, chunk_elements=100)
    assert lane_calls
    for name, tensor in one.items():
        assert torch.equal(two[name], tensor), name


def test_the_lane_lets_go_of_each_tensors_state_once_written(llama_bf16, monkeypatch):
    """A DARE merge's survivor bits are an eighth of a byte per value and model: kept for every
    tensor until the end of a merge they grow with the model (0.4 GB for a 1.1B one). Each
    tensor's merge state must be freed once it is written."""
    refs: list[weakref.ref] = []
    merge_entry = raw.merge_entry

    def spy(plan, entry, merging, *args, **kwargs):
        merge_entry(plan, entry, merging, *args, **kwargs)
        refs.append(weakref.ref(merging))

    alive: list[int] = []
    monkeypatch.setattr(raw, "merge_entry", spy)
    recipe = _recipe("dare_ties", llama_bf16, rescale_mode="l1")
    alloykit.merge_to_state_dict(
        recipe, threads=1, on_done=lambda e: alive.append(sum(r() is not None for r in refs[:-1]))
    )
    assert len(refs) > 3
    assert alive == [0] * len(refs)
