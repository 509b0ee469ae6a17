"""Golden values and properties of fisher and regmean, from the papers' definitions.

Fisher merging (arXiv:2111.09832): θ* = Σ λ_i F_i θ_i / Σ λ_i F_i entrywise.
RegMean (arXiv:2212.09849): the W minimising Σ_i ‖X_i Wᵀ − X_i W_iᵀ‖², with Gram matrices
G_i = X_iᵀ X_i whose off-diagonal entries are scaled by α.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from alloykit.methods import regmean as regmean_module
from alloykit.methods.fisher import fisher_merge
from alloykit.methods.regmean import regmean, regmean_streaming
from alloykit.methods.streaming import Chunk


def fisher(models, weights, fishers=None, floor=1e-6) -> torch.Tensor:
    stack = torch.tensor(models, dtype=torch.float32)
    stats = None if fishers is None else torch.tensor(fishers, dtype=torch.float32)
    lam = torch.tensor(weights, dtype=torch.float32)
    return fisher_merge(stack, None, weight=lam, fisher_floor=floor, fisher=stats)


def close(actual: torch.Tensor, expected, tol: float = 1e-5) -> None:
    expected = torch.as_tensor(np.asarray(expected), dtype=torch.float32).reshape(actual.shape)
    torch.testing.assert_close(actual, expected, rtol=tol, atol=tol)


def test_fisher_weights_each_entry_by_the_models_fisher() -> None:
    out = fisher(
        [[1.0, 2.0, 3.0], [5.0, -2.0, 0.0]], [1.0, 1.0], [[3.0, 1.0, 0.5], [1.0, 1.0, 1.5]]
    )
    close(out, [(3 * 1 + 1 * 5) / 4, 0.0, (0.5 * 3 + 1.5 * 0) / 2])


def test_fisher_multiplies_fishers_by_the_model_weights() -> None:
    out = fisher([[1.0], [4.0]], [3.0, 1.0], [[1.0], [2.0]])
    close(out, [(3 * 1 * 1 + 1 * 2 * 4) / (3 * 1 + 1 * 2)])


def test_fisher_floor_makes_untouched_entries_the_weighted_average() -> None:
    out = fisher([[2.0, 1.0], [6.0, 3.0]], [1.0, 3.0], [[0.0, 0.0], [0.0, 1.0]], floor=1e-6)
    close(out, [(2 + 3 * 6) / 4, (1e-6 * 1 + 3 * 1 * 3) / (1e-6 + 3)])


def test_fisher_without_statistics_is_the_weighted_average() -> None:
    close(fisher([[2.0, 1.0], [6.0, 3.0]], [1.0, 3.0]), [5.0, 2.5])


def regmean_of(models, grams, alpha: float) -> torch.Tensor:
    stack = torch.tensor(np.asarray(models), dtype=torch.float32)
    stats = None if grams is None else torch.tensor(np.asarray(grams), dtype=torch.float32)
    return regmean(stack, None, alpha=alpha, gram=stats)


def test_regmean_minimises_the_distance_to_every_models_outputs() -> None:
    rng = np.random.default_rng(0)
    inputs = [rng.normal(size=(7, 3)), rng.normal(size=(5, 3))]
    weights = [rng.normal(size=(2, 3)), rng.normal(size=(2, 3))]
    # Least squares on the stacked inputs: the objective of the paper, solved independently.
    design = np.concatenate(inputs)
    targets = np.concatenate([x @ w.T for x, w in zip(inputs, weights, strict=True)])
    expected = np.linalg.lstsq(design, targets, rcond=None)[0].T
    grams = [x.T @ x for x in inputs]
    close(regmean_of(weights, grams, alpha=1.0), expected, tol=1e-4)


def test_regmean_with_diagonal_grams_averages_each_input_column() -> None:
    weights = [[[1.0, 2.0], [3.0, 4.0]], [[5.0, 0.0], [-1.0, 8.0]]]
    grams = [np.diag([1.0, 3.0]), np.diag([3.0, 1.0])]
    expected = [[(1 + 3 * 5) / 4, (3 * 2 + 0) / 4], [(3 + 3 * -1) / 4, (3 * 4 + 8) / 4]]
    close(regmean_of(weights, grams, alpha=0.5), expected)


def test_regmean_alpha_scales_the_off_diagonal_entries() -> None:
    weights = [[[1.0, 0.0]], [[0.0, 1.0]]]
    grams = [[[2.0, 1.0], [1.0, 2.0]], [[1.0, -1.0], [-1.0, 3.0]]]
    alpha = 0.5
    g1 = np.array([[2.0, alpha * 1.0], [alpha * 1.0, 2.0]])
    g2 = np.array([[1.0, alpha * -1.0], [alpha * -1.0, 3.0]])
    expected = np.linalg.inv(g1 + g2) @ (g1 @ [1.0, 0.0] + g2 @ [0.0, 1.0])
    close(regmean_of(weights, grams, alpha=alpha), [expected])


def test_regmean_without_grams_is_the_plain_average() -> None:
    close(regmean_of([[1.0, 2.0], [3.0, 6.0]], None, alpha=0.95), [2.0, 4.0])


def test_regmean_singular_gram_sum_takes_the_minimum_norm_solution() -> None:
    # Input 2 is never set: its column is unconstrained, the minimum-norm choice is 0.
    weights = [[[1.0, 5.0]], [[3.0, 7.0]]]
    grams = [np.diag([1.0, 0.0]), np.diag([1.0, 0.0])]
    close(regmean_of(weights, grams, alpha=1.0), [[2.0, 0.0]])


def regmean_by_chunks(weights: torch.Tensor, grams: torch.Tensor, alpha: float, rows: int):
    """RegMean as the engine runs it: one merge per tensor, fed chunks of ``rows`` rows."""
    shape = tuple(weights.shape[1:])
    merging = regmean_streaming(shape, weights.dtype, alpha=alpha, gram=grams)
    parts = [
        merging.merge(Chunk(weights[:, first : first + rows].clone(), None, first, shape))
        for first in range(0, shape[0], rows)
    ]
    return torch.cat(parts)


def test_regmean_widens_grams_a_block_of_rows_at_a_time_without_changing_the_solution(
    monkeypatch,
) -> None:
    monkeypatch.setattr(regmean_module, "BLOCK_BYTES", 1)  # one Gram row per block
    rng = np.random.default_rng(1)
    inputs = [rng.normal(size=(9, 5)), rng.normal(size=(11, 5))]
    weights = [rng.normal(size=(4, 5)), rng.normal(size=(4, 5))]
    alpha = 0.7
    grams = [x.T @ x for x in inputs]
    scaled = [alpha * g + (1 - alpha) * np.diag(np.diag(g)) for g in grams]
    expected = (sum(w @ g for w, g in zip(weights, scaled, strict=True))) @ np.linalg.inv(
        sum(scaled)
    )
    stack = torch.tensor(np.asarray(weights), dtype=torch.float32)
    gram = torch.tensor(np.asarray(grams), dtype=torch.float32)
    close(regmean_by_chunks(stack, gram, alpha, rows=3), expected, tol=1e-4)


def test_regmean_of_a_singular_gram_sum_by_chunks_is_the_minimum_norm_solution() -> None:
    weights = torch.tensor([[[1.0, 5.0], [2.0, 6.0]], [[3.0, 7.0], [0.0, 1.0]]])
    grams = torch.tensor(np.asarray([np.diag([1.0, 0.0]), np.diag([1.0, 0.0])]))
    close(regmean_by_chunks(weights, grams.float(), 1.0, rows=1), [[2.0, 0.0], [1.0, 0.0]])


finite = st.floats(-4, 4, allow_nan=False, width=32)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 9),
    st.integers(1, 6),
    st.integers(1, 9),
    st.integers(1, 3),
    st.integers(0, 2**31 - 1),
    st.floats(0.0, 1.0),
)
def test_regmean_by_row_chunks_is_the_whole_tensor_merge(out, size, rows, count, seed, alpha):
    rng = np.random.default_rng(seed)
    weights = torch.tensor(rng.normal(size=(count, out, size)), dtype=torch.float32)
    grams = []
    for _ in range(count):
        x = rng.normal(size=(size + 2, size))
        grams.append(x.T @ x + 0.1 * np.eye(size))
    gram = torch.tensor(np.asarray(grams), dtype=torch.float32)
    torch.testing.assert_close(
        regmean_by_chunks(weights, gram, alpha, rows),
        regmean(weights, None, alpha=alpha, gram=gram),
        rtol=1e-6,
        atol=1e-6,
    )


@settings(max_examples=40, deadline=None)
@given(
    st.lists(finite, min_size=6, max_size=6),
    st.integers(1, 4),
    st.integers(0, 2**31 - 1),
    st.floats(0.0, 1.0),
)
def test_regmean_of_identical_models_is_that_model(values, count, seed, alpha) -> None:
    weight = torch.tensor(values).reshape(2, 3)
    rng = np.random.default_rng(seed)
    grams = []
    for _ in range(count):
        x = rng.normal(size=(6, 3))
        grams.append(x.T @ x + 0.1 * np.eye(3))
    out = regmean_of(weight.expand(count, 2, 3).numpy(), grams, alpha=alpha)
    close(out, weight, tol=1e-4)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(0.1, 10.0))
def test_regmean_is_unchanged_when_every_gram_is_scaled_alike(seed, scale) -> None:
    rng = np.random.default_rng(seed)
    weights = rng.normal(size=(3, 2, 4))
    grams = [(lambda x: x.T @ x)(rng.normal(size=(8, 4))) for _ in range(3)]
    torch.testing.assert_close(
        regmean_of(weights, [scale * g for g in grams], alpha=0.9),
        regmean_of(weights, grams, alpha=0.9),
        rtol=1e-4,
        atol=1e-4,
    )


@settings(max_examples=40, deadline=None)
@given(
    st.lists(finite, min_size=4, max_size=4),
    st.lists(st.floats(0.0, 5.0, width=32), min_size=12, max_size=12),
    st.lists(st.floats(0.25, 3.0, width=32), min_size=3, max_size=3),
)
def test_fisher_of_identical_models_is_that_model(values, fishers, weights) -> None:
    out = fisher([values] * 3, weights, np.reshape(fishers, (3, 4)).tolist())
    close(out, values, tol=1e-5)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(finite, min_size=8, max_size=8),
    st.lists(st.floats(0.0, 5.0, width=32), min_size=8, max_size=8),
)
def test_fisher_weight_on_one_model_reproduces_it(values, fishers) -> None:
    models = np.reshape(values, (2, 4)).tolist()
    out = fisher(models, [1.0, 0.0], np.reshape(fishers, (2, 4)).tolist())
    close(out, models[0], tol=1e-6)


@pytest.mark.parametrize("order", [[0, 1, 2], [2, 0, 1]])
def test_fisher_does_not_depend_on_the_order_of_models(order) -> None:
    models = [[1.0, -2.0], [0.5, 3.0], [4.0, 0.0]]
    fishers = [[1.0, 2.0], [0.5, 0.1], [3.0, 0.0]]
    weights = [1.0, 2.0, 0.5]
    out = fisher(
        [models[i] for i in order], [weights[i] for i in order], [fishers[i] for i in order]
    )
    close(out, fisher(models, weights, fishers))
