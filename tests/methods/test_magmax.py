"""Golden values for MagMax (arXiv:2407.06322): per entry, the largest-magnitude change."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from method_harness import run

SETTINGS = settings(max_examples=25, deadline=None)


def test_magmax_keeps_the_signed_entry_of_largest_magnitude() -> None:
    base = [1.0, 0.0, -1.0, 2.0]
    models = [[1.5, -3.0, -1.0, 2.1], [0.0, 2.0, 1.0, 1.8], [1.2, 0.5, -1.5, 2.0]]
    # changes: [.5, -3, 0, .1], [-1, 2, 2, -.2], [.2, .5, -.5, 0] -> [-1, -3, 2, -.2]
    out = run("magmax", models, base, **{"lambda": 0.5})
    torch.testing.assert_close(out, torch.tensor([0.5, -1.5, 0.0, 1.9]))


def test_magmax_gives_ties_to_the_model_listed_first() -> None:
    out = run("magmax", [[2.0, -1.0], [-2.0, 1.0]], [0.0, 0.0])
    torch.testing.assert_close(out, torch.tensor([2.0, -1.0]))


def test_magmax_compares_weighted_task_vectors() -> None:
    out = run("magmax", [[1.0], [3.0]], [0.0], weight=[4.0, 1.0])
    torch.testing.assert_close(out, torch.tensor([4.0]))


@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), count=st.integers(1, 4))
def test_identical_models_are_a_fixed_point_of_magmax(seed: int, count: int) -> None:
    base, model = torch.randn((2, 3, 5), generator=torch.Generator().manual_seed(seed))
    out = run("magmax", torch.stack([model] * count), base)
    torch.testing.assert_close(out, model)


@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), order=st.permutations([0, 1, 2]))
def test_magmax_does_not_depend_on_model_order(seed: int, order: list[int]) -> None:
    base, *models = torch.randn((4, 6, 3), generator=torch.Generator().manual_seed(seed))
    out = run("magmax", models, base)
    torch.testing.assert_close(run("magmax", [models[i] for i in order], base), out)
