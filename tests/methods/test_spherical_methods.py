"""Golden values for slerp, nuslerp, multislerp and karcher, computed from their definitions."""

from __future__ import annotations

import math

import pytest
import torch
from method_harness import run


def flat(matrix: list[list[float]]) -> list[float]:
    return [x for row in matrix for x in row]


def dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def norm(a: list[float]) -> float:
    return math.sqrt(dot(a, a))


def slerp_reference(t: float, a: list[float], b: list[float], colinear: float) -> list[float]:
    """Shoemake's formula on the unnormalized vectors; linear when nearly colinear."""
    cos = max(-1.0, min(1.0, dot(a, b) / (norm(a) * norm(b))))
    if abs(cos) > colinear:
        return [(1 - t) * x + t * y for x, y in zip(a, b, strict=True)]
    theta = math.acos(cos)
    ca, cb = math.sin((1 - t) * theta) / math.sin(theta), math.sin(t * theta) / math.sin(theta)
    return [ca * x + cb * y for x, y in zip(a, b, strict=True)]


def close(actual: torch.Tensor, expected) -> None:
    expected = torch.as_tensor(expected, dtype=torch.float32).reshape(actual.shape)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)


def test_slerp_of_orthogonal_vectors_follows_the_arc() -> None:
    out = run("slerp", [[0.0, 2.0]], [1.0, 0.0], t=0.5)
    close(out, [math.sqrt(0.5), 2 * math.sqrt(0.5)])


@pytest.mark.parametrize("t", [0.0, 0.25, 0.7, 1.0])
def test_slerp_treats_a_tensor_as_one_flat_vector(t: float) -> None:
    base = [[0.3, -1.2], [0.5, 2.0]]
    other = [[1.1, 0.4], [-0.7, 1.5]]
    out = run("slerp", [other], base, t=t)
    close(out, slerp_reference(t, flat(base), flat(other), 0.9995))


def test_slerp_at_zero_is_the_base_and_at_one_the_other_model() -> None:
    base, other = [0.3, -1.2, 0.5], [1.1, 0.4, -0.7]
    close(run("slerp", [other], base, t=0.0), base)
    close(run("slerp", [other], base, t=1.0), other)


def test_slerp_of_nearly_colinear_vectors_is_linear() -> None:
    base, other = [1.0, 2.0, 3.0], [2.0, 4.0, 6.001]
    close(
        run("slerp", [other], base, t=0.3),
        [0.7 * b + 0.3 * o for b, o in zip(base, other, strict=True)],
    )


def test_slerp_treats_a_zero_vector_as_orthogonal() -> None:
    shrink = math.sin(0.75 * math.pi / 2)
    close(run("slerp", [[0.0, 0.0]], [1.0, 2.0], t=0.25), [shrink, 2 * shrink])


V0 = [[1.0, 0.5, -0.2], [0.3, -1.0, 0.8]]
V1 = [[-0.4, 1.2, 0.6], [0.9, 0.1, -0.5]]
NU_BASE = [[0.1, 0.2, 0.3], [-0.1, 0.0, 0.2]]


def rows(m: list[list[float]]) -> list[list[float]]:
    return m


def columns(m: list[list[float]]) -> list[list[float]]:
    return [list(c) for c in zip(*m, strict=True)]


def test_nuslerp_flattened_uses_weight_ratio_as_t() -> None:
    out = run("nuslerp", [V0, V1], weight=[1.0, 3.0])
    close(out, slerp_reference(0.75, flat(V0), flat(V1), 1.0))


def test_nuslerp_per_row_slerps_each_last_dimension_vector() -> None:
    out = run("nuslerp", [V0, V1], weight=[2.0, 1.0], nuslerp_flatten=False)
    close(out, [slerp_reference(1 / 3, a, b, 1.0) for a, b in zip(rows(V0), rows(V1), strict=True)])


def test_nuslerp_row_wise_slerps_along_the_first_dimension() -> None:
    out = run("nuslerp", [V0, V1], weight=[1.0, 1.0], nuslerp_flatten=False, nuslerp_row_wise=True)
    per_column = [
        slerp_reference(0.5, a, b, 1.0) for a, b in zip(columns(V0), columns(V1), strict=True)
    ]
    close(out, columns(per_column))


def test_nuslerp_with_base_slerps_task_vectors() -> None:
    d0 = [x - b for x, b in zip(flat(V0), flat(NU_BASE), strict=True)]
    d1 = [x - b for x, b in zip(flat(V1), flat(NU_BASE), strict=True)]
    expected = [
        b + s for b, s in zip(flat(NU_BASE), slerp_reference(0.4, d0, d1, 1.0), strict=True)
    ]
    close(run("nuslerp", [V0, V1], NU_BASE, weight=[0.6, 0.4]), expected)


def test_nuslerp_with_weights_cancelling_uses_the_midpoint() -> None:
    out = run("nuslerp", [V0, V1], weight=[1.0, -1.0])
    close(out, slerp_reference(0.5, flat(V0), flat(V1), 1.0))


def multislerp_reference(vectors: list[list[float]], weights: list[float]) -> list[float]:
    """Tangent-space barycentre at the weighted mean direction, mapped back, mean norm."""
    eps = 1e-8
    total = sum(weights)
    w = [x / total for x in weights]
    units = [[x / (norm(v) + eps) for x in v] for v in vectors]
    mean = [sum(wi * u[j] for wi, u in zip(w, units, strict=True)) for j in range(len(vectors[0]))]
    mean = [x / norm(mean) for x in mean]
    tangents = [[x - dot(u, mean) * m for x, m in zip(u, mean, strict=True)] for u in units]
    step = [sum(wi * tv[j] for wi, tv in zip(w, tangents, strict=True)) for j in range(len(mean))]
    length = norm(step) + eps
    direction = [
        m * math.cos(length) + s * math.sin(length) / length
        for m, s in zip(mean, step, strict=True)
    ]
    radius = sum(wi * norm(v) for wi, v in zip(w, vectors, strict=True))
    return [radius * x for x in direction]


def test_multislerp_golden_without_base() -> None:
    vectors = [[1.0, 0.2, -0.3], [0.1, 1.5, 0.4], [-0.2, 0.3, 2.0]]
    weights = [1.0, 2.0, 0.5]
    close(run("multislerp", vectors, weight=weights), multislerp_reference(vectors, weights))


def test_multislerp_golden_with_base_works_on_task_vectors() -> None:
    base = [0.5, 0.5, 0.5]
    models = [[1.0, 0.2, -0.3], [0.1, 1.5, 0.4]]
    deltas = [[m - b for m, b in zip(model, base, strict=True)] for model in models]
    expected = [b + x for b, x in zip(base, multislerp_reference(deltas, [0.3, 0.7]), strict=True)]
    close(run("multislerp", models, base, weight=[0.3, 0.7]), expected)


def test_multislerp_of_one_model_returns_it() -> None:
    close(run("multislerp", [[1.0, -2.0]], [5.0, 5.0], weight=[0.3]), [1.0, -2.0])


def test_multislerp_of_two_antipodal_models_is_linear() -> None:
    close(run("multislerp", [[1.0, 2.0], [-2.0, -4.0]], weight=[1.0, 1.0]), [-0.5, -1.0])


def test_multislerp_rejects_a_cancelling_mean_of_three() -> None:
    with pytest.raises(ValueError, match="mean direction is zero"):
        run("multislerp", [[1.0, 0.0], [-1.0, 0.0], [2.0, 0.0]], weight=[1.0, 2.0, 1.0])


@pytest.mark.parametrize("weights", [[1.0, 1.0], [1.0, 3.0], [2.5, 0.5]])
def test_karcher_of_two_models_is_the_weighted_geodesic_point(weights: list[float]) -> None:
    a, b = [3.0, 0.0, 1.0], [0.0, 2.0, 0.5]
    out = run("karcher", [a, b], weight=weights, max_iter=100, tol=1e-7)
    t = weights[1] / sum(weights)
    unit = slerp_reference(t, [x / norm(a) for x in a], [x / norm(b) for x in b], 1.0)
    radius = (weights[0] * norm(a) + weights[1] * norm(b)) / sum(weights)
    torch.testing.assert_close(out, torch.tensor([radius * x for x in unit]), atol=1e-4, rtol=0)


def test_karcher_of_symmetric_directions_is_their_centre() -> None:
    out = run("karcher", [[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
    close(out, [2.0 / math.sqrt(3)] * 3)


def test_karcher_leaves_zero_vectors_out_of_the_direction_but_not_the_norm() -> None:
    close(run("karcher", [[3.0, 4.0], [0.0, 0.0]]), [1.5, 2.0])


def test_karcher_of_one_model_returns_it() -> None:
    close(run("karcher", [[3.0, -4.0]]), [3.0, -4.0])
