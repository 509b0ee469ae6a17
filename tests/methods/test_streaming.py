"""Merging a tensor chunk by chunk gives the whole-tensor result, for every streaming method."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from method_harness import kernel_params

from alloykit.methods import all_methods, get_method
from alloykit.methods.streaming import Chunk

CASES: dict[str, dict] = {
    "linear": {"weight": [0.2, 0.5, 0.3]},
    "passthrough": {},
    "nearswap": {"t": 0.4},
    "slerp": {"t": 0.3},
    "model_stock": {},
    "model_stock filter_wise": {"filter_wise": True},
    "task_arithmetic": {"weight": [0.5, 1.0, -0.3]},
    "ties": {"density": [0.5, 0.3, 0.9]},
    "ties frequency": {"density": 0.4, "consensus_method": "frequency"},
    "ties l1": {"density": 0.5, "rescale": True, "rescale_mode": "l1"},
    "dare_linear": {"density": [0.6, 0.2, 1.0]},
    "dare_linear l1": {"density": 0.5, "rescale_mode": "l1"},
    "dare_ties": {"density": 0.4},
    "breadcrumbs": {"density": 0.5, "gamma": 0.1},
    "breadcrumbs_ties": {"density": 0.3, "gamma": 0.2},
    "della": {"density": 0.5, "epsilon": 0.2},
    "della_linear": {"density": 0.4, "epsilon": 0.1},
    "sce": {"select_topk": 0.5},
    "sce all": {},
    "ram": {"epsilon": 0.3},
    "ramplus_tl": {"r": 0.5, "alpha": 2.0, "epsilon": 0.3},
    "magmax": {"weight": [0.5, 1.0, -0.3], "lambda": 0.7},
    "regmean": {"alpha": 0.9},
    "regmean without grams": {"alpha": 0.9},
}
REDUCING = {"slerp", "model_stock", "ties l1", "dare_linear l1", "sce", "sce all", "regmean"}
"""Cases whose whole-tensor sums are added chunk by chunk (or, for RegMean, solved a few
columns at a time): equal up to float rounding."""
WITH_GRAMS = {"regmean"}
"""Cases given each model's Gram ``[cols, cols]`` of random inputs (the rest get none)."""


def test_every_streaming_method_has_a_case() -> None:
    streaming = {m.name for m in all_methods() if m.streaming is not None}
    assert streaming == {case.split()[0] for case in CASES}


@settings(max_examples=60, deadline=None)
@given(
    case=st.sampled_from(sorted(CASES)),
    seed=st.integers(0, 2**31 - 1),
    rows=st.integers(1, 9),
    cols=st.integers(1, 7),
    data=st.data(),
    coarse=st.booleans(),
)
def test_chunked_merge_equals_the_whole_tensor_merge(
    case: str, seed: int, rows: int, cols: int, data, coarse: bool
) -> None:
    name = case.split()[0]
    method = get_method(name)
    count = max(method.min_models, min(3, method.max_models or 3))
    generator = torch.Generator().manual_seed(seed)
    base = torch.randn((rows, cols), generator=generator)
    tensors = base + 0.1 * torch.randn((count, rows, cols), generator=generator)
    if coarse:  # many equal magnitudes: ties at the cut-offs
        base, tensors = base.round(decimals=1), tensors.round(decimals=1)
    params = {k: (v[:count] if isinstance(v, list) else v) for k, v in CASES[case].items()}
    if case in WITH_GRAMS:
        inputs = torch.randn((count, cols + 2, cols), generator=generator)
        params["gram"] = inputs.mT @ inputs + 0.1 * torch.eye(cols)
    kwargs = kernel_params(name, count, seed=seed, **params)
    whole = method.kernel(tensors, base, **kwargs)

    step = data.draw(st.integers(1, rows))
    merge = method.streaming((rows, cols), torch.float32, **kwargs)

    def chunks() -> list[Chunk]:
        return [
            Chunk(tensors[:, a : a + step].clone(), base[a : a + step], a, (rows, cols))
            for a in range(0, rows, step)
        ]

    for observe in merge.passes():
        for chunk in chunks():
            observe(chunk)
    chunked = torch.cat([merge.merge(chunk) for chunk in chunks()])
    if case in REDUCING:
        torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-6)
    else:
        assert torch.equal(chunked, whole)


@pytest.mark.parametrize("name", ["ties", "dare_ties", "slerp", "model_stock"])
def test_whole_tensor_kernels_leave_their_inputs_alone(name: str) -> None:
    method = get_method(name)
    count = max(method.min_models, min(3, method.max_models or 3))
    tensors = torch.randn(count, 4, 5)
    base = torch.randn(4, 5)
    before = tensors.clone(), base.clone()
    extra = {"t": 0.5} if name == "slerp" else {}
    method.kernel(tensors, base, **kernel_params(name, count, **extra))
    assert torch.equal(tensors, before[0]) and torch.equal(base, before[1])
