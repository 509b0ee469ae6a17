"""Golden values for the task-vector methods, computed here from the papers' definitions.

References are written out with plain loops over Python lists, independently of the shared
steps the kernels compose.
"""

from __future__ import annotations

import math

import pytest
import torch
from method_harness import draws, f32, run

from alloykit import native


@pytest.fixture(autouse=True, params=["fused", "torch"])
def kernel_path(request):
    """Every golden test runs on both paths: the fused C kernels and plain torch."""
    if request.param == "fused":
        if not native.available():
            pytest.skip("alloykit's C kernels are not built here")
        yield
    else:
        with native.turned_off():
            yield


BASE = [0.5, -1.0, 2.0, 0.0, 1.5, -0.5]
DELTAS = [  # distinct magnitudes within each model, so "the k largest" is unambiguous
    [1.0, -0.2, 0.9, -0.4, 0.05, 0.7],
    [-0.3, 0.25, -0.6, 0.65, 0.8, 0.1],
    [0.45, -0.95, 0.35, -0.15, -0.85, -0.75],
]
MODELS = [[b + d for b, d in zip(BASE, delta, strict=True)] for delta in DELTAS]
WEIGHTS = [1.0, 0.5, 0.8]


def deltas(models=MODELS, base=BASE) -> list[list[float]]:
    return [[m - b for m, b in zip(model, base, strict=True)] for model in models]


def keep_largest(values: list[float], density: float) -> list[float]:
    k = max(1, int(density * len(values)))
    order = sorted(range(len(values)), key=lambda i: -abs(values[i]))
    return [v if i in order[:k] else 0.0 for i, v in enumerate(values)]


def keep_breadcrumbs(values: list[float], density: float, gamma: float) -> list[float]:
    n = len(values)
    keep = int(density * n)
    top = min(int(gamma * n), n - keep)
    order = sorted(range(n), key=lambda i: -abs(values[i]))
    kept = order[top : top + keep]
    return [v if i in kept else 0.0 for i, v in enumerate(values)]


def sign(x: float) -> int:
    return (x > 0) - (x < 0)


def combine(
    vectors: list[list[float]], weights: list[float], *, elect: str | None, normalize: bool
) -> list[float]:
    """Weighted task vectors summed per position; with ``elect``, only the agreeing ones."""
    weighted = [[w * v for v in vec] for w, vec in zip(weights, vectors, strict=True)]
    out = []
    for j in range(len(vectors[0])):
        column = [row[j] for row in weighted]
        if elect is None:
            members = list(range(len(column)))
            divisor = sum(weights)
        else:
            votes = sum(column) if elect == "total" else sum(sign(x) for x in column)
            elected = 1 if votes >= 0 else -1
            members = [i for i, x in enumerate(column) if sign(x) == elected]
            divisor = sum(weights[i] for i in members)
        total = sum(column[i] for i in members)
        if normalize and divisor != 0:
            total /= divisor
        out.append(total)
    return out


def merged(base: list[float], combined: list[float], scale: float = 1.0) -> torch.Tensor:
    return torch.tensor([b + scale * c for b, c in zip(base, combined, strict=True)])


def close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("normalize", [False, True])
def test_task_arithmetic_adds_scaled_weighted_task_vectors(normalize: bool) -> None:
    out = run(
        "task_arithmetic", MODELS, BASE, weight=WEIGHTS, normalize=normalize, **{"lambda": 0.6}
    )
    expected = combine(deltas(), WEIGHTS, elect=None, normalize=normalize)
    close(out, merged(BASE, expected, 0.6))


def test_task_arithmetic_ignores_density() -> None:
    close(run("task_arithmetic", MODELS, BASE, density=0.2), run("task_arithmetic", MODELS, BASE))


@pytest.mark.parametrize(("rule", "spelling"), [("total", "sum"), ("frequency", "count")])
@pytest.mark.parametrize("density", [0.5, 0.34, 1.0])
def test_ties_trims_elects_and_averages(rule: str, spelling: str, density: float) -> None:
    trimmed = [keep_largest(d, density) for d in deltas()]
    expected = merged(BASE, combine(trimmed, WEIGHTS, elect=rule, normalize=True))
    for name in (rule, spelling):
        out = run("ties", MODELS, BASE, weight=WEIGHTS, density=density, consensus_method=name)
        close(out, expected)


def test_ties_without_normalize_sums_agreeing_entries() -> None:
    trimmed = [keep_largest(d, 0.5) for d in deltas()]
    expected = merged(BASE, combine(trimmed, WEIGHTS, elect="total", normalize=False), 2.0)
    out = run("ties", MODELS, BASE, weight=WEIGHTS, density=0.5, normalize=False, **{"lambda": 2})
    close(out, expected)


def test_ties_rescale_restores_each_task_vectors_l1_norm() -> None:
    scaled = []
    for d in deltas():
        kept = keep_largest(d, 0.5)
        factor = sum(map(abs, d)) / sum(map(abs, kept))
        scaled.append([v * factor for v in kept])
    expected = merged(BASE, combine(scaled, WEIGHTS, elect="total", normalize=True))
    close(run("ties", MODELS, BASE, weight=WEIGHTS, density=0.5, rescale=True), expected)


def test_ties_accepts_per_model_densities() -> None:
    densities = [0.5, 0.34, 0.84]
    trimmed = [keep_largest(d, p) for d, p in zip(deltas(), densities, strict=True)]
    expected = merged(BASE, combine(trimmed, WEIGHTS, elect="total", normalize=True))
    close(run("ties", MODELS, BASE, weight=WEIGHTS, density=densities), expected)


@pytest.mark.parametrize(("density", "gamma"), [(0.5, 0.17), (0.34, 0.34), (0.84, 0.5)])
def test_breadcrumbs_keeps_the_band_below_the_outliers(density: float, gamma: float) -> None:
    kept = [keep_breadcrumbs(d, density, gamma) for d in deltas()]
    expected = merged(BASE, combine(kept, WEIGHTS, elect=None, normalize=False))
    out = run("breadcrumbs", MODELS, BASE, weight=WEIGHTS, density=density, gamma=gamma)
    close(out, expected)


def test_breadcrumbs_ties_adds_sign_election() -> None:
    kept = [keep_breadcrumbs(d, 0.5, 0.17) for d in deltas()]
    expected = merged(BASE, combine(kept, WEIGHTS, elect="total", normalize=False))
    out = run("breadcrumbs_ties", MODELS, BASE, weight=WEIGHTS, density=0.5, gamma=0.17)
    close(out, expected)


def dare_reference(seed: int, densities: list[float], *, elect: str | None) -> torch.Tensor:
    """Drop each entry unless its uniform draw is below the density; divide survivors by it."""
    uniforms = draws(seed, [len(BASE)], len(MODELS))
    kept = [
        [v / p if u < f32(p) else 0.0 for v, u in zip(d, us.tolist(), strict=True)]
        for d, us, p in zip(deltas(), uniforms, densities, strict=True)
    ]
    return merged(BASE, combine(kept, WEIGHTS, elect=elect, normalize=False))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dare_linear_drops_with_probability_one_minus_density(seed: int) -> None:
    densities = [0.5, 0.7, 0.3]
    out = run("dare_linear", MODELS, BASE, seed=seed, weight=WEIGHTS, density=densities)
    close(out, dare_reference(seed, densities, elect=None))


@pytest.mark.parametrize("seed", [0, 5])
def test_dare_ties_elects_signs_after_dropping(seed: int) -> None:
    out = run("dare_ties", MODELS, BASE, seed=seed, weight=WEIGHTS, density=0.6)
    close(out, dare_reference(seed, [0.6] * 3, elect="total"))


def test_dare_l1_mode_reproduces_mergekit_rescale() -> None:
    uniforms = draws(4, [len(BASE)], len(MODELS))
    kept = []
    for d, us in zip(deltas(), uniforms, strict=True):
        masked = [v if u < f32(0.5) else 0.0 for v, u in zip(d, us.tolist(), strict=True)]
        after = sum(map(abs, masked))
        factor = sum(map(abs, d)) / after if after else 1.0
        kept.append([v * factor for v in masked])
    expected = merged(BASE, combine(kept, WEIGHTS, elect=None, normalize=False))
    out = run("dare_linear", MODELS, BASE, seed=4, weight=WEIGHTS, density=0.5, rescale_mode="l1")
    close(out, expected)


def test_dare_without_rescale_only_drops() -> None:
    uniforms = draws(2, [len(BASE)], len(MODELS))
    kept = [
        [v if u < f32(0.5) else 0.0 for v, u in zip(d, us.tolist(), strict=True)]
        for d, us in zip(deltas(), uniforms, strict=True)
    ]
    expected = merged(BASE, combine(kept, WEIGHTS, elect=None, normalize=False))
    out = run("dare_linear", MODELS, BASE, seed=2, weight=WEIGHTS, density=0.5, rescale=False)
    close(out, expected)


def della_reference(
    models: list[list[float]],
    base: list[float],
    seed: int,
    density: float,
    epsilon: float,
    *,
    width: int,
    elect: str | None,
    normalize: bool,
) -> torch.Tensor:
    """MagPrune: within each row, keep probability rises linearly with magnitude rank from
    density - epsilon to density + epsilon; survivors are divided by their probability."""
    uniforms = draws(seed, [len(base) // width, width], len(models))
    kept = []
    for d, us in zip(deltas(models, base), uniforms, strict=True):
        flat_u = us.reshape(-1).tolist()
        row_out = []
        for start in range(0, len(d), width):
            row = d[start : start + width]
            ascending = sorted(range(width), key=lambda i: abs(row[i]))
            for i, v in enumerate(row):
                p = density - epsilon + 2 * epsilon * ascending.index(i) / (width - 1)
                row_out.append(v / p if flat_u[start + i] < p else 0.0)
        kept.append(row_out)
    return merged(base, combine(kept, WEIGHTS, elect=elect, normalize=normalize))


@pytest.mark.parametrize("seed", [0, 3])
def test_della_samples_by_magnitude_rank_then_elects(seed: int) -> None:
    models = torch.tensor(MODELS).reshape(3, 2, 3)
    base = torch.tensor(BASE).reshape(2, 3)
    out = run("della", models, base, seed=seed, weight=WEIGHTS, density=0.5, epsilon=0.2)
    expected = della_reference(MODELS, BASE, seed, 0.5, 0.2, width=3, elect="total", normalize=True)
    close(out.reshape(-1), expected)


def test_della_linear_sums_without_election() -> None:
    out = run("della_linear", MODELS, BASE, seed=7, weight=WEIGHTS, density=0.4, epsilon=0.1)
    expected = della_reference(MODELS, BASE, 7, 0.4, 0.1, width=6, elect=None, normalize=False)
    close(out, expected)


def test_della_rejects_epsilon_reaching_zero_or_one() -> None:
    with pytest.raises(ValueError, match="epsilon"):
        run("della", MODELS, BASE, density=0.1, epsilon=0.2)


LARGE = 100_000


@pytest.mark.parametrize("density", [0.1, 0.5, 0.9])
def test_dare_keeps_a_density_fraction_of_entries(density: float) -> None:
    base = torch.zeros(LARGE)
    out = run("dare_linear", [torch.ones(LARGE)], base, seed=11, density=density, rescale=False)
    kept = (out != 0).float().mean().item()
    assert abs(kept - density) < 4 * math.sqrt(density * (1 - density) / LARGE)


def test_dare_keep_rate_rescale_preserves_the_expected_task_vector() -> None:
    delta = torch.linspace(-1, 1, LARGE)
    out = run("dare_linear", [delta], torch.zeros(LARGE), seed=1, density=0.3)
    assert abs(out.abs().mean().item() - delta.abs().mean().item()) < 0.02


def test_della_keeps_a_density_fraction_favouring_large_magnitudes() -> None:
    delta = torch.linspace(0.01, 1.0, LARGE)
    out = run(
        "della_linear", [delta], torch.zeros(LARGE), seed=2, density=0.4, epsilon=0.3, rescale=False
    )
    kept = out != 0
    assert abs(kept.float().mean().item() - 0.4) < 0.01
    small, large = kept[: LARGE // 10].float().mean(), kept[-LARGE // 10 :].float().mean()
    assert abs(small.item() - 0.13) < 0.02 and abs(large.item() - 0.67) < 0.02
