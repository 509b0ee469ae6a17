"""Golden values for CART (arXiv:2412.12153): mean + lambda * sum of low-rank centred offsets."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from method_harness import run

SETTINGS = settings(max_examples=25, deadline=None)


def outer(i: int, j: int, size: int = 4) -> torch.Tensor:
    matrix = torch.zeros(size, size)
    matrix[i, j] = 1.0
    return matrix


def test_cart_adds_each_centred_vectors_leading_directions_to_the_mean() -> None:
    """Offsets D1 = 3 e0 f1 + e1 f2, D2 = 2 e2 f3 and D3 = -D1 - D2 sum to zero; rank 1 keeps
    3 e0 f1, 2 e2 f3 and -3 e0 f1, which sum to 2 e2 f3."""
    mean = torch.arange(16.0).reshape(4, 4)
    d1 = 3 * outer(0, 1) + outer(1, 2)
    d2 = 2 * outer(2, 3)
    models = torch.stack([mean + d1, mean + d2, mean - d1 - d2])
    out = run("cart", models, rank_ratio=0.25, **{"lambda": 0.5})
    torch.testing.assert_close(out, mean + 0.5 * 2 * outer(2, 3), rtol=1e-5, atol=1e-5)


def test_cart_of_two_models_is_their_average() -> None:
    models = torch.randn((2, 5, 3), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(run("cart", models, rank_ratio=0.5), models.mean(0))


def test_cart_averages_tensors_that_are_not_matrices() -> None:
    out = run("cart", [[1.0, 2.0], [3.0, 0.0], [2.0, 1.0]], rank_ratio=1.0)
    torch.testing.assert_close(out, torch.tensor([2.0, 1.0]))


@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), scale=st.floats(-2, 2))
def test_cart_at_full_rank_is_the_average(seed: int, scale: float) -> None:
    models = torch.randn((4, 5, 6), generator=torch.Generator().manual_seed(seed))
    out = run("cart", models, rank_ratio=1.0, **{"lambda": scale})
    torch.testing.assert_close(out, models.mean(0), rtol=1e-4, atol=1e-5)


@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), count=st.integers(2, 4), ratio=st.floats(0, 1))
def test_identical_models_are_a_fixed_point_of_cart(seed: int, count: int, ratio: float) -> None:
    model = torch.randn((6, 4), generator=torch.Generator().manual_seed(seed))
    out = run("cart", torch.stack([model] * count), rank_ratio=ratio)
    torch.testing.assert_close(out, model)


@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), order=st.permutations([0, 1, 2]))
def test_cart_does_not_depend_on_model_order(seed: int, order: list[int]) -> None:
    models = torch.randn((3, 7, 5), generator=torch.Generator().manual_seed(seed))
    out = run("cart", models, rank_ratio=0.4)
    permuted = run("cart", models[list(order)], rank_ratio=0.4)
    # the mean's rounding depends on the order; truncation can amplify it near a close gap
    torch.testing.assert_close(permuted, out, rtol=1e-3, atol=1e-3)
