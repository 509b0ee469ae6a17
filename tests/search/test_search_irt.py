"""Item response theory: item fits, abilities, and estimates of a full split from a subset."""

from __future__ import annotations

import itertools

import numpy as np

from alloykit.search.irt import (
    Estimator,
    ItemParameters,
    ability,
    fit_items,
    p_irt,
    stratified_subset,
)


def simulate(models: int, items: int, seed: int) -> tuple[np.ndarray, np.ndarray, ItemParameters]:
    rng = np.random.default_rng(seed)
    truth = ItemParameters(rng.lognormal(0.3, 0.3, items), rng.normal(0, 1.5, items))
    abilities = rng.normal(0, 1.2, models)
    probabilities = np.stack([truth.probability(a) for a in abilities])
    return (rng.random(probabilities.shape) < probabilities).astype(float), abilities, truth


def test_fitted_difficulties_follow_the_true_ones() -> None:
    responses, _, truth = simulate(40, 150, seed=0)
    fitted = fit_items(responses)
    assert np.corrcoef(fitted.difficulty, truth.difficulty)[0, 1] > 0.9


def test_items_every_model_gets_right_stay_finite() -> None:
    responses = np.ones((5, 4))
    responses[:, 0] = 0
    fitted = fit_items(responses)
    assert np.all(np.isfinite(fitted.difficulty)) and np.all(np.isfinite(fitted.discrimination))
    assert fitted.difficulty[0] > fitted.difficulty[1]


def test_ability_grows_with_right_answers() -> None:
    items = ItemParameters(np.ones(6), np.linspace(-2, 2, 6))
    index = np.arange(6)
    abilities = [ability(items, index, np.array([1] * k + [0] * (6 - k))) for k in range(7)]
    assert all(a < b for a, b in itertools.pairwise(abilities))


def test_p_irt_counts_the_seen_items_as_answered() -> None:
    items = ItemParameters(np.ones(4), np.zeros(4))
    estimate = p_irt(items, np.array([0, 1]), np.array([1.0, 1.0]))
    theta = ability(items, np.array([0, 1]), np.array([1.0, 1.0]))
    assert np.isclose(estimate, (2 + 2 * items.probability(theta)[0]) / 4)


def test_a_stratified_subset_spans_the_difficulties() -> None:
    items = ItemParameters(np.ones(100), np.arange(100.0)[::-1])
    chosen = stratified_subset(items, 10)
    assert len(chosen) == 10 and len(set(chosen)) == 10
    assert items.difficulty[chosen].min() < 10 and items.difficulty[chosen].max() > 89


def test_irt_estimates_new_models_better_than_a_random_subset_of_the_same_size() -> None:
    anchors, _, _ = simulate(12, 200, seed=1)
    estimator = Estimator.fit(anchors, 20)
    new, _, _ = simulate(60, 200, seed=1)  # the same items, other models
    rng = np.random.default_rng(7)
    irt_errors, subset_errors = [], []
    for row in new[12:]:
        full = row.mean()
        irt_errors.append(abs(estimator.estimate(row[estimator.index]) - full))
        random_subset = rng.choice(200, 20, replace=False)
        subset_errors.append(abs(row[random_subset].mean() - full))
    assert np.mean(irt_errors) < np.mean(subset_errors)
    assert 0.0 <= estimator.blend <= 1.0


def test_a_candidate_far_from_the_fitted_models_is_estimated_without_bias() -> None:
    """Models better than every fitted one (ability 2.5, the fitted ones about N(0, 1.2)) are
    estimated without a strong pull toward the fitted models' mean accuracy: with the joint
    fit's N(0, 1) prior on their ability, 20 answers put them 9 points too low; what is left
    (under 3 points here) comes from the items' own fit on 12 models."""
    anchors, _, truth = simulate(12, 200, seed=1)
    estimator = Estimator.fit(anchors, 20)
    rng = np.random.default_rng(3)
    probabilities = truth.probability(2.5)
    errors = []
    for _ in range(300):
        row = (rng.random(200) < probabilities).astype(float)
        errors.append(p_irt(estimator.items, estimator.index, row[estimator.index]) - row.mean())
    assert abs(np.mean(errors)) < 0.04
