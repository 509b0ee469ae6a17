"""Invariants every kernel must keep, checked on generated inputs."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from method_harness import run

from alloykit.methods import all_methods
from alloykit.methods.selection import top_k_mask
from alloykit.methods.steps import Sparsification, as_decimal, sparsify

SETTINGS = settings(max_examples=25, deadline=None)


def random_tensors(seed: int, count: int, shape: tuple[int, ...]) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((count, *shape), generator=generator)


shapes = st.sampled_from([(1,), (5,), (3, 4), (2, 3, 2)])
seeds = st.integers(0, 2**31 - 1)
positive_weights = st.lists(st.floats(0.1, 5.0), min_size=3, max_size=3)

FIXED_POINT_CASES = {
    "linear": {},
    "task_arithmetic": {"normalize": True},
    "ties": {},
    "dare_linear": {"normalize": True},
    "dare_ties": {"normalize": True},
    "breadcrumbs": {"normalize": True},
    "breadcrumbs_ties": {"normalize": True},
    "della": {},
    "della_linear": {"normalize": True},
    "multislerp": {},
    "karcher": {},
    "model_stock": {},
    "sce": {},
    "ram": {},
    "ramplus_tl": {},
}


@SETTINGS
@given(name=st.sampled_from(sorted(FIXED_POINT_CASES)), seed=seeds, shape=shapes)
def test_identical_models_are_a_fixed_point(name: str, seed: int, shape) -> None:
    base, model = random_tensors(seed, 2, shape)
    models = torch.stack([model] * 3)
    out = run(name, models, base, **FIXED_POINT_CASES[name])
    torch.testing.assert_close(out, model, rtol=1e-4, atol=1e-5)


@SETTINGS
@given(seed=seeds, shape=shapes, weights=st.lists(st.floats(0.1, 3), min_size=2, max_size=2))
def test_nuslerp_of_identical_models_is_that_model(seed: int, shape, weights) -> None:
    base, model = random_tensors(seed, 2, shape)
    for origin in (None, base):
        out = run("nuslerp", torch.stack([model, model]), origin, weight=weights)
        torch.testing.assert_close(out, model, rtol=1e-4, atol=1e-5)


@SETTINGS
@given(name=st.sampled_from(["slerp", "nearswap"]), seed=seeds, shape=shapes, t=st.floats(0, 1))
def test_base_paired_with_itself_is_unchanged(name: str, seed: int, shape, t: float) -> None:
    base = random_tensors(seed, 1, shape)[0]
    torch.testing.assert_close(run(name, base[None], base, t=t), base)


@SETTINGS
@given(
    name=st.sampled_from(["linear", "multislerp", "karcher", "task_arithmetic", "ties"]),
    seed=seeds,
    shape=shapes,
)
def test_a_single_model_is_returned_unchanged(name: str, seed: int, shape) -> None:
    base, model = random_tensors(seed, 2, shape)
    torch.testing.assert_close(run(name, model[None], base), model, rtol=1e-5, atol=1e-6)


@SETTINGS
@given(
    name=st.sampled_from(["linear", "task_arithmetic", "ties", "multislerp", "karcher"]),
    seed=seeds,
    weights=positive_weights,
    factor=st.floats(0.1, 10.0),
)
def test_scaling_all_weights_leaves_a_normalized_merge_unchanged(
    name: str, seed: int, weights: list[float], factor: float
) -> None:
    base, *models = random_tensors(seed, 4, (3, 4))
    extra = {"normalize": True} if name == "task_arithmetic" else {}
    scaled = [w * factor for w in weights]
    out = run(name, models, base, weight=weights, **extra)
    torch.testing.assert_close(
        run(name, models, base, weight=scaled, **extra), out, rtol=1e-4, atol=1e-5
    )


@SETTINGS
@given(
    name=st.sampled_from(["dare_linear", "dare_ties"]),
    seed=seeds,
    weights=st.lists(st.floats(-2, 2), min_size=3, max_size=3),
    scale=st.floats(-2, 2),
    normalize=st.booleans(),
)
def test_dare_at_full_density_is_its_dense_counterpart(
    name: str, seed: int, weights: list[float], scale: float, normalize: bool
) -> None:
    base, *models = random_tensors(seed, 4, (4, 5))
    params = {"weight": weights, "normalize": normalize, "lambda": scale}
    dense = "ties" if name == "dare_ties" else "task_arithmetic"
    out = run(name, models, base, seed=seed, density=1.0, **params)
    torch.testing.assert_close(out, run(dense, models, base, density=1.0, **params))


@SETTINGS
@given(seed=seeds, weights=positive_weights, scale=st.floats(-2, 2))
def test_ties_with_agreeing_signs_is_normalized_task_arithmetic(
    seed: int, weights: list[float], scale: float
) -> None:
    generator = torch.Generator().manual_seed(seed)
    signs = torch.randint(0, 2, (12,), generator=generator) * 2 - 1
    magnitudes = torch.rand((3, 12), generator=generator) + 0.1
    base = torch.randn(12, generator=generator)
    models = base + signs * magnitudes
    params = {"weight": weights, "lambda": scale}
    out = run("ties", models, base, **params)
    expected = run("task_arithmetic", models, base, normalize=True, **params)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


SYMMETRIC = [
    "linear",
    "task_arithmetic",
    "ties",
    "breadcrumbs_ties",
    "multislerp",
    "karcher",
    "model_stock",
    "sce",
]


@SETTINGS
@given(name=st.sampled_from(SYMMETRIC), seed=seeds, order=st.permutations([0, 1, 2]))
def test_model_order_does_not_matter(name: str, seed: int, order: list[int]) -> None:
    base, *models = random_tensors(seed, 4, (4, 3))
    weights = [0.5, 1.0, 2.0]
    params = {"weight": weights} if get_param(name, "weight") else {}
    if get_param(name, "density"):
        params["density"] = 0.5
    out = run(name, models, base, **params)
    if "weight" in params:
        params["weight"] = [weights[i] for i in order]
    permuted = run(name, [models[i] for i in order], base, **params)
    torch.testing.assert_close(permuted, out, rtol=1e-4, atol=1e-5)


def get_param(name: str, param: str):
    return next(m for m in all_methods() if m.name == name).param(param)


@pytest.mark.parametrize("method", all_methods(), ids=lambda m: m.name)
def test_kernels_do_not_modify_their_inputs(method) -> None:
    count = method.max_models or 3
    count = max(count, method.min_models)
    base, *models = random_tensors(7, count + 1, (4, 6))
    stacked = torch.stack(models)
    saved_models, saved_base = stacked.clone(), base.clone()
    required = {p.name: 0.1 for p in method.params if p.required}
    run(method.name, stacked, base, **required)
    assert torch.equal(stacked, saved_models) and torch.equal(base, saved_base)


RANDOM_CASES = {
    "dare_linear": {"density": 0.3},
    "dare_ties": {"density": [0.3, 0.6]},
    "della": {"density": 0.4, "epsilon": 0.2},
    "della_linear": {"density": [0.5, 0.3], "epsilon": 0.1},
}


@pytest.mark.parametrize("name", sorted(RANDOM_CASES))
def test_random_methods_depend_only_on_the_seed(name: str) -> None:
    base, *models = random_tensors(3, 3, (392, 256))  # 100,352 entries per model
    params = RANDOM_CASES[name]
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = run(name, models, base, seed=42, **params)
        torch.set_num_threads(2)
        double = run(name, models, base, seed=42, **params)
    finally:
        torch.set_num_threads(previous)
    assert torch.equal(single, double)
    assert torch.equal(run(name, models, base, seed=42, **params), single)
    assert not torch.equal(run(name, models, base, seed=43, **params), single)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", sorted(RANDOM_CASES))
def test_random_methods_give_the_same_masks_on_cuda(name: str) -> None:
    base, *models = random_tensors(3, 3, (400, 256))
    params = RANDOM_CASES[name]
    on_cpu = run(name, models, base, seed=42, **params)
    on_cuda = run(name, [m.cuda() for m in models], base.cuda(), seed=42, **params)
    assert torch.equal(on_cuda.cpu() != base, on_cpu != base)
    torch.testing.assert_close(on_cuda.cpu(), on_cpu)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method", all_methods(), ids=lambda m: m.name)
def test_cuda_and_cpu_agree(method) -> None:
    count = max(min(method.max_models or 2, 2), method.min_models)
    base, *models = random_tensors(5, count + 1, (64, 48))
    params = {p.name: 0.1 for p in method.params if p.required}
    params.update(RANDOM_CASES.get(method.name, {}))
    if method.param("density") is not None and method.name not in RANDOM_CASES:
        params["density"] = 0.5
    on_cpu = run(method.name, torch.stack(models), base, seed=9, **params)
    on_cuda = run(method.name, torch.stack(models).cuda(), base.cuda(), seed=9, **params)
    torch.testing.assert_close(on_cuda.cpu(), on_cpu, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("fraction", [0.001, 0.3, 0.5, 0.7, 0.999])
def test_top_k_mask_is_the_same_on_cuda(fraction: float) -> None:
    values = random_tensors(1, 1, (100_000,))[0].round(decimals=1).abs()  # many ties
    k = int(fraction * values.numel())
    assert torch.equal(top_k_mask(values.cuda(), k).cpu(), top_k_mask(values, k))


@SETTINGS
@given(
    values=st.lists(st.sampled_from([0.0, 0.5, 0.25, 1.0, 2.0, 3.0]), min_size=1, max_size=30),
    data=st.data(),
)
def test_top_k_mask_selects_exactly_k_dominating_entries(values: list[float], data) -> None:
    tensor = torch.tensor(values)
    k = data.draw(st.integers(0, len(values)))
    mask = top_k_mask(tensor, k)
    assert int(mask.sum()) == k
    if 0 < k < len(values):
        assert tensor[mask].min() >= tensor[~mask].max()


@SETTINGS
@given(seed=seeds, size=st.integers(1, 60), density=st.floats(0, 1), gamma=st.floats(0, 1))
def test_breadcrumbs_mask_keeps_the_density_count(
    seed: int, size: int, density: float, gamma: float
) -> None:
    delta = random_tensors(seed, 1, (size,))[0]
    mask = sparsify(delta, Sparsification.BREADCRUMBS, density=density, gamma=gamma) != 0
    assert int(mask.sum()) == int(density * size)
    dropped_top = (
        delta.abs()[~mask & (delta.abs() > delta.abs()[mask].max())] if mask.any() else None
    )
    if dropped_top is not None:
        assert dropped_top.numel() <= max(int(gamma * size), 0)


@SETTINGS
@given(st.decimals(min_value="0", max_value="1", places=4))
def test_as_decimal_recovers_four_place_decimals(value) -> None:
    written = float(value)
    assert as_decimal(torch.tensor(written, dtype=torch.float32).item()) == written
