"""The shared task-vector steps, each checked against a direct reading of its definition."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alloykit.methods.selection import top_k_mask
from alloykit.methods.steps import (
    RescaleMode,
    SignRule,
    Sparsification,
    as_decimal,
    della_keep_probability,
    disjoint_sum,
    l1_factor,
    sign_consensus,
    sparsify,
    weighted_sum,
)


def magnitude_mask(delta: torch.Tensor, density: float) -> torch.Tensor:
    """Which entries TIES's trim keeps (the test deltas have no zeros)."""
    return sparsify(delta, Sparsification.MAGNITUDE, density=density) != 0


def breadcrumbs_mask(delta: torch.Tensor, density: float, gamma: float) -> torch.Tensor:
    return sparsify(delta, Sparsification.BREADCRUMBS, density=density, gamma=gamma) != 0


def test_top_k_mask_keeps_the_k_largest() -> None:
    values = torch.tensor([0.5, 3.0, 1.0, 2.0, 0.1])
    assert top_k_mask(values, 2).tolist() == [False, True, False, True, False]


def test_top_k_mask_breaks_ties_by_position() -> None:
    values = torch.tensor([1.0, 2.0, 1.0, 1.0, 0.0])
    assert top_k_mask(values, 3).tolist() == [True, True, True, False, False]
    assert top_k_mask(values, 2).tolist() == [True, True, False, False, False]


@pytest.mark.parametrize("k", [-1, 0, 5, 9])
def test_top_k_mask_handles_out_of_range_counts(k: int) -> None:
    values = torch.arange(5.0)
    assert int(top_k_mask(values, k).sum()) == min(max(k, 0), 5)


def test_magnitude_mask_ranks_by_absolute_value() -> None:
    delta = torch.tensor([[0.1, -0.9], [0.5, -0.3]])
    assert magnitude_mask(delta, 0.5).tolist() == [[False, True], [True, False]]


def test_magnitude_mask_keeps_at_least_one_entry() -> None:
    delta = torch.tensor([0.1, -0.9, 0.5, -0.3])
    assert magnitude_mask(delta, 0.01).tolist() == [False, True, False, False]


def test_breadcrumbs_mask_drops_outliers_and_small_entries() -> None:
    delta = torch.tensor([0.1, -1.0, 0.5, -0.3, 0.7, 0.2, -0.6, 0.4, 0.05, -0.8])
    # 10 entries: gamma 0.1 drops the 1 largest (-1.0), density 0.3 keeps the next 3.
    kept = delta[breadcrumbs_mask(delta, 0.3, 0.1)]
    assert sorted(kept.abs().tolist()) == pytest.approx([0.6, 0.7, 0.8])


def test_breadcrumbs_mask_drops_fewer_outliers_to_keep_density() -> None:
    delta = torch.tensor([0.1, -1.0, 0.5, -0.3, 0.7])
    # 5 entries, density 0.8 keeps 4, so at most 1 outlier can go although gamma asks for 2.
    assert breadcrumbs_mask(delta, 0.8, 0.4).tolist() == [True, False, True, True, True]


def test_della_probabilities_rise_with_magnitude_rank_per_row() -> None:
    delta = torch.tensor([[0.3, -0.1, 0.2], [5.0, 4.0, -6.0]])
    expected = torch.tensor([[0.6, 0.4, 0.5], [0.5, 0.4, 0.6]])  # 0.5 ± 0.1 over ranks
    torch.testing.assert_close(della_keep_probability(delta, 0.5, 0.1), expected)


def test_della_probability_of_a_single_entry_row_is_density() -> None:
    out = della_keep_probability(torch.tensor([[2.0], [3.0]]), 0.3, 0.2)
    torch.testing.assert_close(out, torch.full((2, 1), 0.3))


@pytest.mark.parametrize(("density", "epsilon"), [(0.1, 0.1), (0.9, 0.15)])
def test_della_rejects_probabilities_outside_zero_one(density: float, epsilon: float) -> None:
    with pytest.raises(ValueError, match="density"):
        della_keep_probability(torch.ones(4), density, epsilon)


def test_keep_rate_rescale_divides_by_keep_probability() -> None:
    delta = torch.tensor([[0.3, -0.1, 0.2], [5.0, 4.0, -6.0]])
    out = sparsify(
        delta, Sparsification.DELLA, density=0.5, epsilon=0.1, rescale_mode=RescaleMode.KEEP_RATE
    )
    probability = torch.tensor([[0.6, 0.4, 0.5], [0.5, 0.4, 0.6]])
    kept = out != 0
    torch.testing.assert_close(out[kept], (delta / probability)[kept])


def test_l1_rescale_restores_the_l1_norm() -> None:
    delta = torch.tensor([1.0, -2.0, 3.0, -4.0])
    out = sparsify(delta, Sparsification.MAGNITUDE, density=0.5, rescale_mode=RescaleMode.L1)
    assert out.tolist() == pytest.approx([0.0, 0.0, 3.0 * 10 / 7, -4.0 * 10 / 7])


def test_l1_rescale_leaves_near_zero_tensors_alone() -> None:
    assert l1_factor(1e-9, 1e-9) == 1.0
    assert l1_factor(2.0, 0.0) == 1.0
    assert l1_factor(2.0, 0.5) == 4.0
    assert l1_factor(1.0, 3.0) == float(np.float32(1.0) / np.float32(3.0))  # in float32


@pytest.mark.parametrize("method", list(Sparsification))
def test_sparsify_at_full_density_is_identity(method: Sparsification) -> None:
    delta = torch.randn(10)
    out = sparsify(delta, method, density=1.0, seed=3, rescale_mode=RescaleMode.KEEP_RATE)
    assert torch.equal(out, delta)


@pytest.mark.parametrize("method", list(Sparsification))
def test_sparsify_at_zero_density_is_zero(method: Sparsification) -> None:
    out = sparsify(torch.randn(6), method, density=0.0, seed=1)
    assert out.tolist() == [0.0] * 6


def test_total_sign_rule_elects_the_sign_of_the_sum() -> None:
    deltas = torch.tensor([[3.0, 1.0, 0.0], [-1.0, -1.0, 2.0], [-1.0, -1.0, -2.0]])
    agree = sign_consensus(deltas, SignRule.TOTAL)
    # column sums: +1, -1, 0 (a tie elects +; zeros never agree)
    assert agree.tolist() == [[True, False, False], [False, True, True], [False, True, False]]


def test_frequency_sign_rule_elects_the_sign_held_by_more_models() -> None:
    deltas = torch.tensor([[3.0, 1.0], [-1.0, -1.0], [-1.0, 1.0]])
    agree = sign_consensus(deltas, SignRule.FREQUENCY)
    assert agree.tolist() == [[False, True], [True, False], [True, True]]


def test_disjoint_sum_averages_over_agreeing_weights() -> None:
    weighted = torch.tensor([[2.0, 1.0], [-4.0, 3.0]])
    weights = torch.tensor([2.0, 1.0])
    agree = torch.tensor([[1.0, 1.0], [0.0, 1.0]])  # masks are numbers
    assert disjoint_sum(weighted, weights, agree, normalize=False).tolist() == [2.0, 4.0]
    assert disjoint_sum(weighted, weights, agree, normalize=True).tolist() == pytest.approx(
        [1.0, 4.0 / 3]
    )


def test_disjoint_sum_with_no_agreeing_model_is_zero() -> None:
    weighted = torch.tensor([[0.0], [0.0]])
    agree = torch.tensor([[0.0], [0.0]])
    assert disjoint_sum(weighted, torch.ones(2), agree, normalize=True).tolist() == [0.0]


def test_weighted_sum_ignores_a_zero_weight_total() -> None:
    weighted = torch.tensor([[1.0], [-1.0]])
    assert weighted_sum(weighted, torch.tensor([1.0, -1.0]), normalize=True).tolist() == [0.0]


@pytest.mark.parametrize("text", ["0.7", "0.1", "0.35", "0.9999", "1e-05", "0.123457"])
def test_as_decimal_recovers_the_written_value(text: str) -> None:
    single = torch.tensor(float(text), dtype=torch.float32).item()
    assert as_decimal(single) == float(text)
