"""The --device cuda path gives the CPU path's result. Runs only where CUDA is available."""

from __future__ import annotations

import pytest
import torch
from method_recipes import recipe_for

import alloykit
from alloykit.methods import all_methods

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("method", all_methods(), ids=lambda m: m.name)
def test_cuda_merge_matches_cpu_merge(method, llama):
    recipe = recipe_for(method, llama)
    recipe["seed"] = 3
    on_cpu = alloykit.merge_to_state_dict(recipe, device="cpu")
    on_gpu = alloykit.merge_to_state_dict(recipe, device="cuda")
    assert set(on_cpu) == set(on_gpu)
    for name, tensor in on_cpu.items():
        assert on_gpu[name].device.type == "cpu"
        torch.testing.assert_close(on_gpu[name], tensor, rtol=1e-4, atol=1e-5, msg=name)


def test_cuda_merge_writes_a_loadable_directory(llama, tmp_path):
    recipe = recipe_for(next(m for m in all_methods() if m.name == "ties"), llama)
    out = alloykit.merge(recipe, tmp_path / "out", device="cuda", threads=2)
    assert (out / "model.safetensors.index.json").exists()


@pytest.mark.parametrize("method", ["task_arithmetic", "ties", "slerp"])
def test_a_cuda_merger_re_merges_as_the_cuda_engine_merges(method, llama):
    """Resident stacks on the GPU: chunks view them (or are copied from them) on the device."""
    recipe = recipe_for(next(m for m in all_methods() if m.name == method), llama)
    merger = alloykit.Merger(recipe, device="cuda")
    merger.merge()
    expected = alloykit.merge_to_state_dict(recipe, device="cuda")
    merged = merger.merge(recipe)
    assert set(merged) == set(expected)
    for name, tensor in expected.items():
        assert merged[name].device.type == "cuda"
        torch.testing.assert_close(merged[name].cpu(), tensor, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize(
    ("method", "key"), [("tsv_merge", "alpha"), ("iso_cts", "alpha"), ("pcb", "lambda")]
)
def test_a_lines_scale_gradient_merges_on_cuda_as_on_cpu(method, key, llama):
    """LiNeS (arXiv:2410.17146) is a depth gradient on a method's scale: the per-layer scale
    reaches the kernels on the GPU as on the CPU."""
    recipe = {
        "merge_method": method,
        "base_model": str(llama["base"]),
        "models": [{"model": str(llama[f"ft{i}"])} for i in (1, 2, 3)],
        "parameters": {key: [0.4, 1.3]},
        "dtype": "float32",
    }
    on_cpu = alloykit.merge_to_state_dict(recipe, device="cpu")
    on_gpu = alloykit.merge_to_state_dict(recipe, device="cuda")
    for name, tensor in on_cpu.items():
        torch.testing.assert_close(on_gpu[name], tensor, rtol=1e-4, atol=1e-5, msg=name)
