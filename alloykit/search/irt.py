"""Item response theory: estimate a candidate's accuracy on a whole split from a few items.

Scoring every candidate of a search on every validation example is the search's main cost.
MERGE^3 (arXiv 2502.10436) and tinyBenchmarks (arXiv 2402.14992) score a small subset instead
and estimate the full accuracy with a two-parameter logistic (2PL) model: example ``i`` is
answered right with probability ``σ(a_i (θ − b_i))``, where ``θ`` is the model's ability and
``a_i``, ``b_i`` the item's discrimination and difficulty. The items' parameters are fitted
once from the full responses of the models at hand (the base and the experts: the endpoints
every candidate lies between); each candidate's ability is then fitted on its subset, and its
accuracy estimated as the items it was run on plus the predicted probability of each other
item (p-IRT), blended with the plain subset mean (gp-IRT) by how well each did on the
endpoints.

The fits are maximum a posteriori estimates with standard priors (θ ~ N(0, 1),
b ~ N(0, 2²), log a ~ N(0, 0.5²)) by L-BFGS in float64: with a handful of responders per item,
maximum likelihood alone sends items that every endpoint gets right (or wrong) to infinite
difficulty. (The IRT packages on PyPI either need a probabilistic-programming stack, py-irt,
or have been unmaintained since 2021, girth; the fit is a few lines of torch.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

DIFFICULTY_PRIOR = 2.0
LOG_DISCRIMINATION_PRIOR = 0.5
CANDIDATE_ABILITY_PRIOR = 10.0
"""Standard deviation of the prior on a candidate's ability, fitted on its subset alone. The
joint fit's N(0, 1) sets the scale of the items; kept for a candidate's ~20 answers, it pulls
the ability toward the fitted models' centre, and the estimate toward their mean accuracy: on
the example zoo that biased estimates by up to 5 points (merges better than the endpoints'
middle were underestimated, worse ones overestimated). A weak prior only keeps the ability
finite when every answer is right or every one wrong."""


@dataclass(frozen=True)
class ItemParameters:
    """2PL parameters of each item of one task."""

    discrimination: np.ndarray
    difficulty: np.ndarray

    def probability(self, ability: float) -> np.ndarray:
        """Each item's probability of a right answer at ``ability``."""
        return 1.0 / (1.0 + np.exp(-self.discrimination * (ability - self.difficulty)))

    def __len__(self) -> int:
        return len(self.difficulty)


def fit_items(responses: np.ndarray, *, iterations: int = 200) -> ItemParameters:
    """Items' parameters from ``responses[model, item]`` (0/1), jointly with the models'
    abilities, by MAP estimation (deterministic: L-BFGS from fixed starting values)."""
    y = torch.as_tensor(np.asarray(responses, dtype=np.float64))
    models, items = y.shape
    ability = torch.zeros(models, dtype=torch.float64, requires_grad=True)
    difficulty = torch.zeros(items, dtype=torch.float64, requires_grad=True)
    log_a = torch.zeros(items, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [ability, difficulty, log_a], max_iter=iterations, line_search_fn="strong_wolfe"
    )

    def loss() -> torch.Tensor:
        optimizer.zero_grad()
        logits = log_a.exp()[None, :] * (ability[:, None] - difficulty[None, :])
        value = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="sum")
        value = value + 0.5 * (ability**2).sum()
        value = value + 0.5 * ((difficulty / DIFFICULTY_PRIOR) ** 2).sum()
        value = value + 0.5 * ((log_a / LOG_DISCRIMINATION_PRIOR) ** 2).sum()
        value.backward()
        return value

    optimizer.step(loss)
    return ItemParameters(log_a.detach().exp().numpy(), difficulty.detach().numpy())


MAX_NEWTON_STEP = 2.0


def ability(items: ItemParameters, index: np.ndarray, right: np.ndarray) -> float:
    """MAP ability (prior N(0, :data:`CANDIDATE_ABILITY_PRIOR`²)) from the answers ``right``
    to the items ``index``, by Newton's method on the concave log posterior (steps capped, as
    the flat prior leaves the curvature small far from the items)."""
    a, b = items.discrimination[index], items.difficulty[index]
    y = np.asarray(right, dtype=float)
    precision = 1.0 / CANDIDATE_ABILITY_PRIOR**2
    theta = 0.0
    for _ in range(200):
        p = 1.0 / (1.0 + np.exp(-a * (theta - b)))
        gradient = float(np.sum(a * (y - p))) - precision * theta
        curvature = -float(np.sum(a * a * p * (1 - p))) - precision
        step = min(MAX_NEWTON_STEP, max(-MAX_NEWTON_STEP, gradient / curvature))
        theta -= step
        if abs(step) < 1e-10:
            break
    return theta


def p_irt(items: ItemParameters, index: np.ndarray, right: np.ndarray) -> float:
    """Accuracy over all items: the answers seen, plus the predicted probability of the rest."""
    seen = np.zeros(len(items), dtype=bool)
    seen[index] = True
    predicted = items.probability(ability(items, index, right))
    return float((np.sum(right) + predicted[~seen].sum()) / len(items))


def stratified_subset(items: ItemParameters, size: int) -> np.ndarray:
    """``size`` items spread evenly over the range of difficulty (tinyBenchmarks chooses
    representative items the same way, by their IRT parameters): a subset whose difficulties
    look like the whole split's, so that few items estimate well."""
    order = np.argsort(items.difficulty, kind="stable")
    positions = ((np.arange(size) + 0.5) * len(items) / size).astype(int)
    return np.sort(order[positions])


@dataclass(frozen=True)
class Estimator:
    """gp-IRT for one task: ``λ · subset mean + (1 − λ) · p-IRT``.

    ``λ`` weighs each estimate by the other's error on the endpoints: the squared error of
    p-IRT against their known full accuracies, against the binomial variance of a subset mean
    of that size (tinyBenchmarks' gp-IRT balances the two the same way)."""

    items: ItemParameters
    index: np.ndarray
    blend: float

    @classmethod
    def fit(cls, responses: np.ndarray, size: int) -> Estimator:
        items = fit_items(responses)
        index = stratified_subset(items, min(size, len(items)))
        errors, variances = [], []
        for row in np.asarray(responses, dtype=float):
            full = float(row.mean())
            errors.append((p_irt(items, index, row[index]) - full) ** 2)
            variances.append(full * (1 - full) / len(index))
        irt_error, subset_variance = float(np.mean(errors)), float(np.mean(variances))
        total = irt_error + subset_variance
        blend = 0.5 if total == 0 else irt_error / total
        return cls(items, index, blend)

    def estimate(self, right: np.ndarray) -> float:
        """The full-split accuracy estimated from the answers to :attr:`index`."""
        right = np.asarray(right, dtype=float)
        mean = float(right.mean()) if len(right) else 0.0
        return self.blend * mean + (1 - self.blend) * p_irt(self.items, self.index, right)
