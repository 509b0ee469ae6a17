"""LiNeS (arXiv:2410.17146) is a depth gradient on a method's scale: ``[alpha, alpha + beta]``.

Post-training Layer Scaling Prevents Forgetting and Enhances Model Merging, Wang et al. 2024:
block ``l`` of ``L`` gets its merged task vector scaled by ``alpha + beta * l / (L - 1)``, every
tensor outside the blocks by ``alpha`` (the authors' code). A recipe's gradient is read at
``t = l / (L - 1)`` inside the blocks and ``t = 0`` outside, which is exactly that.
"""

from __future__ import annotations

import pytest
import torch

import alloykit
from alloykit.arch.layers import parse_layer_name

ALPHA, BETA, LAYERS = 0.4, 0.9, 4


def lines_scale(name: str) -> float:
    layer = parse_layer_name(name)
    return ALPHA if layer is None else ALPHA + BETA * layer.index / (LAYERS - 1)


def merged(method: str, llama, scale) -> dict[str, torch.Tensor]:
    recipe = {
        "merge_method": method,
        "base_model": str(llama["base"]),
        "models": [{"model": str(llama[f"ft{i}"])} for i in (1, 2, 3)],
        "parameters": {scale[0]: scale[1]},
        "dtype": "float32",
    }
    return alloykit.merge_to_state_dict(recipe)


@pytest.mark.parametrize(
    ("method", "key"),
    [("task_arithmetic", "lambda"), ("ties", "lambda"), ("tsv_merge", "alpha"),
     ("iso_cts", "alpha"), ("pcb", "lambda")],
)  # fmt: skip
def test_a_scale_gradient_scales_each_blocks_merged_task_vector_linearly(
    method: str, key: str, llama
) -> None:
    base = merged(method, llama, (key, 0.0))
    unscaled = merged(method, llama, (key, 1.0))
    lines = merged(method, llama, (key, [ALPHA, ALPHA + BETA]))
    assert {parse_layer_name(n).index for n in lines if parse_layer_name(n)} == set(range(LAYERS))
    for name, tensor in lines.items():
        expected = base[name] + lines_scale(name) * (unscaled[name] - base[name])
        torch.testing.assert_close(tensor, expected, rtol=1e-5, atol=1e-6, msg=name)
