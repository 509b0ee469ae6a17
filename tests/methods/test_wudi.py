"""WUDI (arXiv:2503.08099) against its definition: autograd and torch's Adam on the loss."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from method_harness import run

SETTINGS = settings(max_examples=15, deadline=None)


def wudi_by_autograd(taus: torch.Tensor, iterations: int, lr: float) -> torch.Tensor:
    """The paper's eq. (loss of the merged vector against every task vector), optimized by
    torch.optim.Adam from the sum of the task vectors, in float64."""
    merged = torch.nn.Parameter(taus.sum(0).double())
    taus = taus.double()
    norms = taus.flatten(1).square().sum(1)
    optimizer = torch.optim.Adam([merged], lr=lr)
    for _ in range(iterations):
        loss = sum(
            ((merged - tau) @ tau.T).square().sum() / norm
            for tau, norm in zip(taus, norms, strict=True)
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return merged.detach().float()


def random_tensors(seed: int, count: int, shape=(6, 4)) -> torch.Tensor:
    return torch.randn((count, *shape), generator=torch.Generator().manual_seed(seed))


@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), iterations=st.integers(0, 40))
def test_wudi_follows_adam_on_the_interference_loss(seed: int, iterations: int) -> None:
    base, *models = random_tensors(seed, 4)
    out = run("wudi", models, base, iterations=iterations, learning_rate=0.01)
    expected = base + wudi_by_autograd(torch.stack(models) - base, iterations, 0.01)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)


def test_wudi_lowers_the_interference_loss() -> None:
    base, *models = random_tensors(3, 4, (8, 5))
    taus = torch.stack(models) - base

    def loss(merged: torch.Tensor) -> float:
        return sum(float(((merged - t) @ t.T).square().sum() / t.square().sum()) for t in taus)

    start = run("wudi", models, base, iterations=0) - base
    end = run("wudi", models, base, iterations=200, learning_rate=0.01) - base
    torch.testing.assert_close(start, taus.sum(0))
    assert loss(end) < 0.5 * loss(start)


def test_wudi_averages_tensors_that_are_not_matrices() -> None:
    out = run("wudi", [[2.0, 0.0], [0.0, 2.0]], [1.0, 1.0], iterations=5)
    torch.testing.assert_close(out, torch.tensor([1.0, 1.0]))


@SETTINGS
@given(seed=st.integers(0, 2**31 - 1))
def test_one_model_is_a_fixed_point_of_wudi(seed: int) -> None:
    base, model = random_tensors(seed, 2)
    out = run("wudi", model[None], base, iterations=50, learning_rate=0.01)
    torch.testing.assert_close(out, model)


def test_wudi_is_reproducible() -> None:
    base, *models = random_tensors(5, 4, (16, 12))
    first = run("wudi", models, base, iterations=30, learning_rate=1e-3)
    assert torch.equal(run("wudi", models, base, iterations=30, learning_rate=1e-3), first)
