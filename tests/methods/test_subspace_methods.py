"""Golden values for TSV-M, Iso-C and Iso-CTS, computed from the papers' definitions.

Task vectors are built from chosen singular directions, so each expected merge follows from
the definition by hand (float64 here, float32 in the kernels).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from method_harness import kernel_params, run

from alloykit.methods import get_method
from alloykit.methods.isotropic import subspace_split
from alloykit.methods.subspace import svd

SETTINGS = settings(max_examples=20, deadline=None)


def outer(u: list[float], v: list[float]) -> torch.Tensor:
    return torch.outer(torch.tensor(u, dtype=torch.float64), torch.tensor(v, dtype=torch.float64))


def unit(i: int, size: int) -> list[float]:
    return [1.0 if j == i else 0.0 for j in range(size)]


def close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected.float(), rtol=1e-5, atol=1e-5)


def rotation(angle: float) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, -s], [s, c]], dtype=torch.float64)


def random_tensors(seed: int, count: int, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.randn((count, *shape), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("shape", [(5, 9), (9, 5), (6, 6)])
def test_the_thin_svd_of_wide_tall_and_square_matrices_reconstructs_them(shape) -> None:
    """Wide matrices are decomposed through their transpose; the factors are the same kind."""
    matrix = random_tensors(4, 1, shape)[0]
    u, s, vh = svd(matrix)
    k = min(shape)
    assert (u.shape, s.shape, vh.shape) == ((shape[0], k), (k,), (k, shape[1]))
    assert torch.all(s[:-1] >= s[1:])
    torch.testing.assert_close(u.T @ u, torch.eye(k), rtol=0, atol=1e-5)
    torch.testing.assert_close(vh @ vh.T, torch.eye(k), rtol=0, atol=1e-5)
    torch.testing.assert_close((u * s) @ vh, matrix, rtol=0, atol=1e-5)
    torch.testing.assert_close(
        s, torch.linalg.svdvals(matrix.double()).float(), rtol=1e-5, atol=1e-6
    )


def test_an_svd_that_fails_to_converge_in_float32_is_retried_in_float64(monkeypatch) -> None:
    matrix = random_tensors(5, 1, (7, 4))[0]
    lapack = torch.linalg.svd

    def fails_in_float32(tensor: torch.Tensor, full_matrices: bool = True):
        if tensor.dtype == torch.float32:
            raise torch.linalg.LinAlgError("linalg.svd: The algorithm failed to converge")
        return lapack(tensor, full_matrices=full_matrices)

    monkeypatch.setattr(torch.linalg, "svd", fails_in_float32)
    for shaped in (matrix, matrix.T):
        u, s, vh = svd(shaped)
        assert u.dtype == s.dtype == vh.dtype == torch.float32
        torch.testing.assert_close((u * s) @ vh, shaped, rtol=0, atol=1e-5)


# TSV-M


def test_tsv_of_tasks_in_orthogonal_subspaces_is_their_sum() -> None:
    base = torch.randn(4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    first = 3 * outer(unit(0, 4), unit(1, 4)) + outer(unit(1, 4), unit(3, 4))
    second = 2 * outer(unit(2, 4), unit(0, 4)) + 0.5 * outer(unit(3, 4), unit(2, 4))
    out = run("tsv_merge", [base + first, base + second], base, alpha=0.7)
    close(out, base + 0.7 * (first + second))


def test_tsv_orthogonalizes_overlapping_singular_vectors_by_their_polar_factor() -> None:
    """Two rank-1 task vectors (one direction each: floor(2 / 2)) whose left singular vectors
    meet at cosine c: U = [u1 u2] becomes U G^(-1/2) with G = U^T U = [[1, c], [c, 1]], whose
    inverse square root is ((p + q) I + (p - q) J) / 2, p = (1 + c)^(-1/2), q = (1 - c)^(-1/2)."""
    u1, u2 = [1.0, 0.0, 0.0], [0.6, 0.8, 0.0]
    v1, v2 = [1.0, 0.0], [0.0, 1.0]
    base = torch.zeros(3, 2, dtype=torch.float64)
    first, second = 2 * outer(u1, v1), outer(u2, v2)
    c = 0.6
    p, q = (1 + c) ** -0.5, (1 - c) ** -0.5
    inverse_root = 0.5 * torch.tensor([[p + q, p - q], [p - q, p + q]], dtype=torch.float64)
    u_orth = torch.tensor([u1, u2], dtype=torch.float64).T @ inverse_root
    expected = u_orth @ torch.diag(torch.tensor([2.0, 1.0], dtype=torch.float64))
    expected = expected @ torch.tensor([v1, v2], dtype=torch.float64)
    torch.testing.assert_close(u_orth.T @ u_orth, torch.eye(2, dtype=torch.float64))
    close(run("tsv_merge", [first, second], base), expected)


def test_tsv_keeps_only_each_tasks_leading_directions() -> None:
    """k = 4, two tasks: each keeps its top two directions; the first task's third is dropped."""
    first = 5 * outer(unit(0, 4), unit(0, 4)) + 4 * outer(unit(1, 4), unit(1, 4))
    first += outer(unit(2, 4), unit(2, 4))
    second = 3 * outer(unit(3, 4), unit(3, 4)) + 0.25 * outer(unit(2, 4), unit(2, 4))
    base = torch.zeros(4, 4, dtype=torch.float64)
    expected = first - outer(unit(2, 4), unit(2, 4)) + second
    close(run("tsv_merge", [first, second], base), expected)


def test_tsv_weights_scale_each_task_vector_first() -> None:
    first, second = outer(unit(0, 2), unit(0, 2)), outer(unit(1, 2), unit(1, 2))
    out = run("tsv_merge", [first, second], torch.zeros(2, 2), weight=[2.0, -1.0])
    close(out, 2 * first - second)


def test_tsv_gives_no_update_to_a_matrix_with_fewer_directions_than_tasks() -> None:
    base = torch.ones(2, 5)
    models = random_tensors(1, 3, (2, 5))
    close(run("tsv_merge", models, base), base)


def test_tsv_averages_tensors_that_are_not_matrices() -> None:
    base = torch.tensor([1.0, 2.0, 3.0])
    models = [[2.0, 2.0, 3.0], [1.0, 4.0, 0.0]]
    close(run("tsv_merge", models, base, alpha=2.0), torch.tensor([2.0, 4.0, 0.0]))


@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), shape=st.sampled_from([(3, 4), (5, 2), (6, 6)]))
def test_tsv_of_one_model_returns_it(seed: int, shape) -> None:
    base, model = random_tensors(seed, 2, shape)
    torch.testing.assert_close(run("tsv_merge", model[None], base), model, rtol=1e-4, atol=1e-5)


# Iso-C and Iso-CTS


def test_iso_c_sets_every_singular_value_to_their_mean() -> None:
    left, right = rotation(math.pi / 6), rotation(math.pi / 4)
    first = left @ torch.diag(torch.tensor([4.0, 0.0], dtype=torch.float64)) @ right.T
    second = left @ torch.diag(torch.tensor([0.0, 2.0], dtype=torch.float64)) @ right.T
    base = torch.tensor([[1.0, -1.0], [0.5, 2.0]], dtype=torch.float64)
    out = run("iso_c", [base + first, base + second], base, alpha=0.5)
    close(out, base + 0.5 * 3.0 * left @ right.T)


def test_iso_c_averages_tensors_that_are_not_matrices() -> None:
    out = run("iso_c", [[3.0, 0.0], [1.0, 2.0]], [1.0, 1.0], alpha=1.0)
    close(out, torch.tensor([2.0, 1.0]))


def test_iso_cts_adds_each_tasks_directions_outside_the_common_subspace() -> None:
    """k = 4, two tasks, fraction 0.5: the common space is the sum's top two directions
    (4 and 3, one from each task); each task adds its best direction outside it (1 and 0.5);
    all four singular values become their mean 2.125."""
    e = [unit(i, 4) for i in range(4)]
    f = [e[1], e[2], e[3], e[0]]
    first = 4 * outer(e[0], f[0]) + outer(e[2], f[2])
    second = 3 * outer(e[1], f[1]) + 0.5 * outer(e[3], f[3])
    base = torch.zeros(4, 4, dtype=torch.float64)
    expected = 2.125 * sum(outer(e[i], f[i]) for i in range(4))
    out = run("iso_cts", [first, second], base, common_space_fraction=0.5)
    close(out, expected)


def test_iso_cts_drops_task_directions_inside_the_common_subspace() -> None:
    """Both tasks share their strongest direction; fraction 0.5 of k = 4 gives a common space
    of two directions (5 from the shared one, 2 from the first task), then one direction per
    task outside it: the first task's 1.5 and the second's 1. Mean: 9.5 / 4."""
    e = [unit(i, 4) for i in range(4)]
    first = 3 * outer(e[0], e[0]) + 2 * outer(e[1], e[1]) + 1.5 * outer(e[2], e[2])
    second = 2 * outer(e[0], e[0]) + outer(e[3], e[3])
    out = run("iso_cts", [first, second], torch.zeros(4, 4), common_space_fraction=0.5)
    close(out, 9.5 / 4 * torch.eye(4, dtype=torch.float64))


@pytest.mark.parametrize(
    ("k", "count", "fraction", "split"),
    [(10, 3, 0.8, (7, 1)), (768, 8, 0.8, (616, 19)), (4, 2, 0.5, (2, 1)), (3, 2, 0.0, (1, 1))],
)
def test_iso_cts_split_leaves_an_evenly_divisible_task_space(k, count, fraction, split) -> None:
    assert subspace_split(k, count, fraction) == split


@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), shape=st.sampled_from([(4, 4), (6, 3), (3, 7)]))
def test_iso_cts_with_the_whole_space_common_is_iso_c(seed: int, shape) -> None:
    base, *models = random_tensors(seed, 4, shape)
    common = run("iso_cts", models, base, common_space_fraction=1.0, alpha=0.8)
    torch.testing.assert_close(common, run("iso_c", models, base, alpha=0.8), rtol=1e-4, atol=1e-4)


def iso_cts_by_definition(deltas: torch.Tensor, fraction: float) -> torch.Tensor:
    """Iso-CTS written out as the paper's steps, in float64: full SVDs of the sum and of each
    task's residual ``(I - U_c U_c^T) delta`` (a dense projector), then the polar factors of
    the whole concatenations ``[U_1 .. U_T, U_c]`` and ``[V_1 .. V_T, V_c]``."""
    deltas = deltas.double()
    common, per_task = subspace_split(min(deltas.shape[1:]), deltas.shape[0], fraction)
    u, s, vh = torch.linalg.svd(deltas.sum(0), full_matrices=False)
    projector = torch.eye(deltas.shape[1], dtype=torch.float64) - u[:, :common] @ u[:, :common].T
    parts = [torch.linalg.svd(projector @ delta, full_matrices=False) for delta in deltas]
    lefts = torch.cat([*(p[0][:, :per_task] for p in parts), u[:, :common]], dim=1)
    values = torch.cat([*(p[1][:per_task] for p in parts), s[:common]])
    rights = torch.cat([*(p[2][:per_task].T for p in parts), vh[:common].T], dim=1)

    def polar(matrix: torch.Tensor) -> torch.Tensor:
        left, _, right = torch.linalg.svd(matrix, full_matrices=False)
        return left @ right

    return values.mean() * polar(lefts) @ polar(rights).T


@SETTINGS
@given(
    seed=st.integers(0, 2**31 - 1),
    shape=st.sampled_from([(12, 12), (20, 9), (9, 20), (16, 30), (30, 16)]),
    count=st.integers(1, 4),
    fraction=st.sampled_from([0.0, 0.5, 0.8]),
)
def test_iso_cts_equals_its_definition_with_whole_projections(
    seed: int, shape, count: int, fraction: float
) -> None:
    """The kernel takes each task's SVD in the complement of the common subspace and
    orthogonalizes only the task-specific left vectors when ``rows <= cols``; tall matrices take
    the paper's steps. Both equal the dense definition, compared in float64: in float32 the
    polar factors of nearly dependent singular vectors round differently by up to 1e-3 in
    either order of steps."""
    base, *models = random_tensors(seed, count + 1, shape).double()
    expected = base + iso_cts_by_definition(torch.stack(models) - base, fraction)
    params = kernel_params("iso_cts", count, common_space_fraction=fraction)
    out = get_method("iso_cts").kernel(torch.stack(models), base, **params)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, expected, rtol=1e-9, atol=1e-9)


@SETTINGS
@given(
    name=st.sampled_from(["iso_c", "iso_cts"]),
    seed=st.integers(0, 2**31 - 1),
    shape=st.sampled_from([(6, 6), (8, 5), (5, 9)]),
)
def test_isotropic_merges_have_a_flat_spectrum(name: str, seed: int, shape) -> None:
    base, *models = random_tensors(seed, 4, shape)
    spectrum = torch.linalg.svdvals(run(name, models, base) - base)
    torch.testing.assert_close(spectrum, spectrum.mean().expand_as(spectrum), rtol=1e-3, atol=1e-4)


@SETTINGS
@given(
    name=st.sampled_from(["tsv_merge", "iso_c", "iso_cts"]),
    seed=st.integers(0, 2**31 - 1),
    order=st.permutations([0, 1, 2]),
)
def test_subspace_merges_do_not_depend_on_model_order(name: str, seed: int, order) -> None:
    base, *models = random_tensors(seed, 4, (9, 7))
    out = run(name, models, base)
    permuted = run(name, [models[i] for i in order], base)
    torch.testing.assert_close(permuted, out, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["tsv_merge", "iso_c", "iso_cts", "cart"])
def test_subspace_merges_compute_half_precision_inputs_in_float32(name: str) -> None:
    """A bfloat16 compute dtype: no SVD exists in half precision, so it is widened; the task
    vectors are still subtracted in bfloat16 (rounding about 1% of each entry)."""
    base, *models = random_tensors(2, 4, (8, 6)).bfloat16()
    kernel = get_method(name).kernel
    half = kernel(torch.stack(models), base, **kernel_params(name, 3))
    wide = kernel(torch.stack(models).float(), base.float(), **kernel_params(name, 3))
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, wide, rtol=0.1, atol=0.1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", ["tsv_merge", "iso_c", "iso_cts", "cart", "wudi"])
@pytest.mark.parametrize("shape", [(48, 32), (32, 48), (40, 40)])
def test_whole_matrix_merges_on_cuda_equal_the_cpu_for_tall_wide_and_square_layers(
    name: str, shape
) -> None:
    """cuSOLVER's singular vectors may differ from LAPACK's in sign; the merges do not (Iso-CTS
    takes a different path for ``rows <= cols``, hence the three shapes)."""
    base, *models = random_tensors(11, 4, shape)
    on_cpu = run(name, models, base)
    on_cuda = run(name, [model.cuda() for model in models], base.cuda())
    assert on_cuda.device.type == "cuda"
    torch.testing.assert_close(on_cuda.cpu(), on_cpu, rtol=1e-4, atol=1e-5)
