"""The lane's merges (alloykit.methods.stored) against the methods' torch paths, on tensors:
the same bits for linear, task arithmetic, DARE and Model Stock of bfloat16 inputs."""

from __future__ import annotations

import dataclasses
import itertools
import math
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from alloykit import native
from alloykit.methods import all_methods, get_method, stored
from alloykit.methods.coefficients import stock_ratio, weight_divisor
from alloykit.methods.model_stock import interpolation_ratio
from alloykit.methods.stored import (
    LinearOfStored,
    ModelStockOfStored,
    StoredChunk,
    TaskVectorsOfStored,
    stored_merge,
)
from alloykit.methods.streaming import Chunk
from alloykit.methods.task_vector_settings import METHODS

pytestmark = pytest.mark.skipif(not native.available(), reason="the kernels are not built")


def _chunk_of(models: torch.Tensor, base: torch.Tensor | None, out: np.ndarray) -> StoredChunk:
    """A lane chunk viewing bfloat16 ``models`` [n, numel] side by side, and ``base``."""
    return StoredChunk(
        models=models.data_ptr(),
        count=models.shape[0],
        stride=models.shape[1],
        base=None if base is None else base.data_ptr(),
        numel=models.shape[1],
        out=out.ctypes.data,
    )


def _torch_merge(method: str, models: torch.Tensor, base: torch.Tensor | None, **params):
    """The method's torch path on one stored chunk (as the engine feeds it)."""
    merging = get_method(method).streaming(tuple(models.shape[1:]), torch.float32, **params)
    shape = tuple(models.shape[1:])
    for observe in merging.passes():
        observe(Chunk(models, base, 0, shape, stored=True))
    return merging.merge(Chunk(models, base, 0, shape, stored=True))


inputs = st.tuples(
    st.integers(1, 5),  # models
    st.integers(1, 700),  # values
    st.integers(0, 2**31),  # seed
    st.booleans(),  # normalize
)


def _random(count: int, numel: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(numel, generator=gen).to(torch.bfloat16)
    models = (base.float() + 0.1 * torch.randn(count, numel, generator=gen)).to(torch.bfloat16)
    weights = (torch.rand(count, generator=gen) * 2 - 0.5).tolist()
    return models, base, weights


@settings(max_examples=40, deadline=None)
@given(inputs)
def test_linear_in_the_lane_is_the_torch_paths(case):
    count, numel, seed, normalize = case
    models, _, weights = _random(count, numel, seed)
    out = np.empty(numel, dtype=np.float32)
    LinearOfStored(weights, normalize).merge(_chunk_of(models, None, out))
    expected = _torch_merge(
        "linear", models, None, weight=torch.tensor(weights, dtype=torch.float32),
        normalize=normalize,
    )  # fmt: skip
    assert torch.equal(torch.from_numpy(out), expected)


@settings(max_examples=40, deadline=None)
@given(inputs, st.floats(-2, 2, allow_nan=False))
def test_task_arithmetic_in_the_lane_is_the_torch_paths(case, scale):
    count, numel, seed, normalize = case
    models, base, weights = _random(count, numel, seed)
    out = np.empty(numel, dtype=np.float32)
    settings = {m.name: m for m in METHODS}["task_arithmetic"]
    options = settings.options({"normalize": normalize, "lambda": scale, "rescale": False})
    TaskVectorsOfStored(weights, options).merge(_chunk_of(models, base, out))
    expected = _torch_merge(
        "task_arithmetic", models, base, weight=torch.tensor(weights, dtype=torch.float32),
        density=torch.ones(count), normalize=normalize, rescale=False, **{"lambda": scale},
        int8_mask=False,
    )  # fmt: skip
    assert torch.equal(torch.from_numpy(out), expected)


@settings(max_examples=40, deadline=None)
@given(
    inputs,
    st.sampled_from(["dare_ties", "dare_linear"]),
    st.sampled_from(["l1", "keep_rate"]),
    st.sampled_from(["sum", "count"]),
    st.integers(1, 4),  # chunks
)
def test_dare_in_the_lane_is_the_torch_paths(case, method, rescale_mode, consensus, chunks):
    """Same draws, same survivors (read back from the measuring pass's bits with l1), same
    bits out, fed in chunks as the engine feeds them."""
    count, numel, seed, normalize = case
    models, base, weights = _random(count, numel, seed)
    densities = [0.3 + 0.1 * m for m in range(count)]
    params = {
        "normalize": normalize, "lambda": 1.0, "rescale": True, "rescale_mode": rescale_mode,
        "consensus_method": consensus, "int8_mask": False,
    }  # fmt: skip
    factory = stored_merge(
        method, {"weight": weights, "density": densities}, params, count, numel=numel, seed=seed
    )
    torch_merge = get_method(method).streaming(
        (numel,), torch.float32, weight=torch.tensor(weights), density=torch.tensor(densities),
        seed=seed, **params,
    )  # fmt: skip
    bounds = [numel * c // chunks for c in range(chunks + 1)]
    pieces = list(itertools.pairwise(bounds))
    out = np.empty(numel, dtype=np.float32)

    def lane_chunk(a: int, b: int) -> StoredChunk:
        part = models[:, a:b].contiguous()
        keep_alive.append(part)
        return StoredChunk(
            part.data_ptr(), count, b - a, base[a:b].data_ptr(), b - a, out[a:].ctypes.data, a
        )

    keep_alive: list[torch.Tensor] = []
    for observe in factory.passes():
        for a, b in pieces:
            observe(lane_chunk(a, b))
    for observe in torch_merge.passes():
        for a, b in pieces:
            observe(Chunk(models[:, a:b].contiguous(), base[a:b], a, (numel,), stored=True))
    expected = torch.empty(numel)
    for a, b in pieces:
        factory.merge(lane_chunk(a, b))
        chunk = Chunk(models[:, a:b].contiguous(), base[a:b], a, (numel,), stored=True)
        expected[a:b] = torch_merge.merge(chunk)
    assert torch.equal(torch.from_numpy(out), expected)


@settings(max_examples=40, deadline=None)
@given(inputs)
def test_model_stock_in_the_lane_is_the_torch_paths(case):
    count, numel, seed, _ = case
    count = max(count, 2)
    models, base, _ = _random(count, numel, seed)
    out = np.empty(numel, dtype=np.float32)
    merging = ModelStockOfStored(count)
    chunk = _chunk_of(models, base, out)
    for observe in merging.passes():
        observe(chunk)
    merging.merge(chunk)
    expected = _torch_merge("model_stock", models, base, filter_wise=False)
    assert torch.equal(torch.from_numpy(out), expected)


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 6), st.integers(0, 2**31))
def test_the_scalar_model_stock_ratio_is_the_papers(k, seed):
    """stock_ratio (whole tensors) and interpolation_ratio (filter-wise, on tensors) are two
    forms of the paper's formula: they agree to float64 rounding."""
    gen = torch.Generator().manual_seed(seed)
    offsets = torch.randn(k, 9, generator=gen, dtype=torch.float64)
    offsets[1:] += offsets[0]  # correlated updates, cosines away from 0
    squares = offsets.square().sum(-1)
    pairs = list(itertools.combinations(range(k), 2))
    products = torch.stack([(offsets[i] * offsets[j]).sum() for i, j in pairs])
    expected = float(interpolation_ratio(squares, products))
    cos = np.mean(
        [float(products[p]) / math.sqrt(float(squares[i] * squares[j])) for p, (i, j) in
         enumerate(pairs)]
    )  # fmt: skip
    assert stock_ratio([*squares.tolist(), *products.tolist()], k) == pytest.approx(expected)
    assert expected == pytest.approx(k * cos / (1 + (k - 1) * cos))


def test_opposite_updates_keep_the_base():
    """Two updates at 180°: 1 + (k − 1)·cosθ = 0, and the ratio is 0 (the base is kept)."""
    assert stock_ratio([4.0, 4.0, -4.0], 2) == 0.0


def test_the_weight_divisor_is_the_float32_sum_in_model_order():
    weights = [0.1, 0.2, 0.3]
    total = np.float32(np.float32(np.float32(0.1) + np.float32(0.2)) + np.float32(0.3))
    assert weight_divisor(weights, True) == float(total)
    assert weight_divisor(weights, False) == 1.0
    assert weight_divisor([1e-9, 0.0], True) == 1.0  # ~0: left undivided
    assert weight_divisor([0.5, -0.5], True) == 1.0


def test_the_methods_the_lane_runs_are_those_whose_contracts_declare_a_raw_form():
    declared = {m.name for m in all_methods() if m.raw_merge is not None}
    assert declared == {"linear", "task_arithmetic", "dare_linear", "dare_ties", "model_stock"}
    for name in declared:
        per_model = {"weight": [0.5, 0.5], "density": [0.5, 0.5]}
        assert stored_merge(name, per_model, _globals_of(name), 2, numel=8) is not None


def test_a_method_runs_in_the_lane_by_declaring_its_raw_form_alone(monkeypatch):
    """What a contract's ``raw_merge`` names is what the lane builds, given the method's name
    and the tensor's parameters; no table elsewhere lists it."""
    seen = []

    def factory(method, per_model, globals_, count, numel, seed):
        seen.append((method, per_model, globals_, count, numel, seed))
        return LinearOfStored(per_model["weight"], normalize=False)

    monkeypatch.setattr(sys.modules[__name__], "raw_form_for_test", factory, raising=False)
    declared = dataclasses.replace(get_method("ties"), raw_merge=f"{__name__}:raw_form_for_test")
    monkeypatch.setattr(stored, "get_method", lambda name: declared)
    merge = stored_merge("ties", {"weight": [2.0]}, {"lambda": 1.0}, 1, numel=8, seed=3)
    assert isinstance(merge, LinearOfStored)
    assert seen == [("ties", {"weight": [2.0]}, {"lambda": 1.0}, 1, 8, 3)]


def _globals_of(name: str) -> dict:
    """The defaults of ``name``'s global parameters, as the planner resolves them."""
    method = get_method(name)
    return {p.name: p.default for p in method.params if p.scope.value == "global"}


def test_the_lane_declines_what_needs_the_torch_path():
    assert stored_merge("ties", {"weight": [1.0]}, {}, 1) is None
    assert stored_merge("della", {"weight": [1.0]}, {}, 1) is None
    assert stored_merge("model_stock", {}, {"filter_wise": True}, 2) is None
    assert stored_merge("linear", {"weight": [1.0] * 65}, {"normalize": True}, 65) is None
    assert isinstance(
        stored_merge("linear", {"weight": [1.0]}, {"normalize": True}, 1), LinearOfStored
    )
