"""Golden values for linear, passthrough, model_stock, nearswap and sce, from their definitions."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from method_harness import run


def close(actual: torch.Tensor, expected) -> None:
    expected = torch.as_tensor(expected, dtype=torch.float32).reshape(actual.shape)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)


def flat(matrix: list[list[float]]) -> list[float]:
    return [x for row in matrix for x in row]


def test_linear_is_the_weighted_mean() -> None:
    out = run("linear", [[1.0, 2.0], [3.0, -2.0], [0.0, 4.0]], weight=[1.0, 2.0, 1.0])
    close(out, [7.0 / 4, 2.0 / 4])


def test_linear_without_normalize_is_the_weighted_sum() -> None:
    out = run("linear", [[1.0, 2.0], [3.0, -2.0]], weight=[0.5, 2.0], normalize=False)
    close(out, [6.5, -3.0])


def test_passthrough_scales_its_single_input() -> None:
    close(run("passthrough", [[1.0, -2.0]], scale=[0.5]), [0.5, -1.0])


def cosine(a: list[float], b: list[float]) -> float:
    num = sum(x * y for x, y in zip(a, b, strict=True))
    den = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return num / max(den, 1e-6)


def model_stock_reference(models: list[list[float]], base: list[float]) -> list[float]:
    """t = k·cosθ / (1 + (k − 1)·cosθ) with θ the mean pairwise angle of the updates."""
    k = len(models)
    offsets = [[m - b for m, b in zip(model, base, strict=True)] for model in models]
    pairs = list(itertools.combinations(offsets, 2))
    cos = sum(cosine(a, b) for a, b in pairs) / len(pairs)
    t = k * cos / (1 + (k - 1) * cos)
    average = [sum(col) / k for col in zip(*models, strict=True)]
    return [t * a + (1 - t) * b for a, b in zip(average, base, strict=True)]


MS_BASE = [[0.1, -0.2, 0.3], [0.0, 0.5, -0.4]]
MS_MODELS = [
    [[0.4, -0.1, 0.2], [0.3, 0.7, -0.2]],
    [[0.2, 0.1, 0.5], [-0.1, 0.9, -0.5]],
    [[0.5, -0.3, 0.1], [0.2, 0.4, 0.1]],
]


def test_model_stock_interpolates_by_the_mean_cosine_of_updates() -> None:
    expected = model_stock_reference([flat(m) for m in MS_MODELS], flat(MS_BASE))
    close(run("model_stock", MS_MODELS, MS_BASE), expected)


def test_model_stock_filter_wise_uses_one_ratio_per_row() -> None:
    expected = [model_stock_reference([m[r] for m in MS_MODELS], MS_BASE[r]) for r in range(2)]
    close(run("model_stock", MS_MODELS, MS_BASE, filter_wise=True), expected)


def test_model_stock_of_two_orthogonal_updates_keeps_the_base() -> None:
    # cos θ = 0 gives t = 0; opposite updates of two models make 1 + (k-1)cosθ = 0 (singular).
    close(run("model_stock", [[1.0, 0.0], [0.0, 1.0]], [0.0, 0.0]), [0.0, 0.0])
    close(run("model_stock", [[1.0, 1.0], [-1.0, -1.0]], [0.0, 0.0]), [0.0, 0.0])


def test_model_stock_of_agreeing_updates_takes_their_mean() -> None:
    close(run("model_stock", [[2.0, 4.0], [1.0, 2.0]], [0.0, 0.0]), [1.5, 3.0])


@pytest.mark.parametrize("t", [0.0, 0.05, 0.3, 2.0])
def test_nearswap_moves_by_t_over_distance(t: float) -> None:
    base = [0.0, 1.0, -1.0, 0.5]
    other = [0.1, 1.0, 0.0, -0.5]
    expected = []
    for a, b in zip(base, other, strict=True):
        share = min(1.0, max(0.0, t / max(abs(a - b), 1e-6)))
        expected.append(share * b + (1 - share) * a)
    close(run("nearswap", [other], base, t=t), expected)


def sce_reference(models: list[list[float]], base: list[float], topk: float) -> list[float]:
    """Select high-variance positions, weight models by energy, erase minority signs."""
    n, size = len(models), len(base)
    deltas = [[m - b for m, b in zip(model, base, strict=True)] for model in models]
    variance = []
    for j in range(size):
        column = [d[j] for d in deltas]
        mean = sum(column) / n
        variance.append(sum((x - mean) ** 2 for x in column) / n)
    k = int(sum(v != 0 for v in variance) * topk)
    selected = sorted(range(size), key=lambda j: -variance[j])[:k] if topk < 1 else range(size)
    deltas = [[d[j] if j in selected else 0.0 for j in range(size)] for d in deltas]
    energy = [sum(x * x for x in d) for d in deltas]
    weights = [e / sum(energy) for e in energy]
    out = []
    for j in range(size):
        column = [d[j] for d in deltas]
        elected = 1 if sum(column) >= 0 else -1
        members = [i for i, x in enumerate(column) if (x > 0) - (x < 0) == elected]
        divisor = sum(weights[i] for i in members)
        total = sum(weights[i] * column[i] for i in members)
        out.append(base[j] + (total / divisor if divisor else 0.0))
    return out


SCE_BASE = [0.0, 0.5, -0.5, 1.0, 0.2, -0.1]
SCE_MODELS = [
    [0.3, 0.9, -0.6, 1.2, -0.5, 0.0],
    [-0.2, 0.4, -0.1, 0.7, 0.1, -0.15],
    [0.6, 0.55, -0.9, 1.05, 0.9, 0.3],
]


@pytest.mark.parametrize("topk", [1.0, 0.5, 0.34])
def test_sce_selects_calculates_and_erases(topk: float) -> None:
    out = run("sce", SCE_MODELS, SCE_BASE, select_topk=topk)
    close(out, sce_reference(SCE_MODELS, SCE_BASE, topk))


def test_sce_energy_weights_hold_for_small_task_vectors() -> None:
    base = [1.0, 1.0, 1.0]
    models = [[1.001, 1.0, 0.999], [1.0003, 1.0002, 1.0]]
    close(run("sce", models, base), sce_reference(models, base, 1.0))


def test_sce_with_nothing_selected_returns_the_base() -> None:
    close(run("sce", SCE_MODELS, SCE_BASE, select_topk=0.0), SCE_BASE)
