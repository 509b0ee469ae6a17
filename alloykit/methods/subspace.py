"""Shared steps of the methods that merge task vectors through their singular vectors.

Task Singular Vectors (arXiv:2412.00081), Iso-C / Iso-CTS (arXiv:2502.04959) and CART
(arXiv:2412.12153) all split a layer's task vector into singular directions, keep some of them
and put a matrix back together; these are those steps, written once. Every step works on one
whole matrix (the contracts do not stream), in float32 on the kernel's device.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from alloykit.methods.linear import broadcast_weights


def task_vectors(
    tensors: torch.Tensor, base: torch.Tensor | None, weight: torch.Tensor
) -> torch.Tensor:
    """``weight_i * (tensors_i - base)`` for every model, stacked ``[n, ...]`` (a new tensor)."""
    if base is None:
        raise ValueError("a task-vector method needs a base model")
    deltas = tensors - base
    return deltas.mul_(broadcast_weights(weight.to(deltas.dtype), deltas))


def is_matrix(tensor: torch.Tensor) -> bool:
    """Whether a (per-model) tensor is a layer's 2-D weight, the only kind the subspace methods
    decompose; others (norms, biases, convolutions) are averaged, as the reference code does."""
    return tensor.dim() == 2


def widened(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` in float32 if it is in half precision: LAPACK and cuSOLVER have no half
    precision SVD, so a bfloat16 or float16 compute dtype is widened (as the reference code
    does)."""
    return tensor.float() if tensor.dtype in (torch.bfloat16, torch.float16) else tensor


def svd(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The thin SVD ``(U, s, Vh)``, in float32 at least (:func:`widened`). A wide matrix is
    decomposed through its transpose (``A^T = V diag(s) U^T``): torch's CPU SVD takes over twice
    as long on a wide matrix as on its transpose (benchmarks/README.md)."""
    matrix = widened(matrix)
    if matrix.shape[-2] < matrix.shape[-1]:
        v, s, uh = tall_svd(matrix.mT)
        return uh.mT, s, v.mT
    return tall_svd(matrix)


def tall_svd(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``torch.linalg.svd(matrix, full_matrices=False)``, retried in float64 where it fails to
    converge: LAPACK's divide-and-conquer ``gesdd`` (torch's CPU SVD) sometimes does on float32
    matrices with clustered singular values (an Iso-CTS merge of a 1.1B model stopped on one,
    benchmarks/README.md); the retry's factors are cast back to ``matrix``'s dtype."""
    try:
        return torch.linalg.svd(matrix, full_matrices=False)
    except torch.linalg.LinAlgError:
        if matrix.dtype == torch.float64:
            raise
        u, s, vh = torch.linalg.svd(matrix.double(), full_matrices=False)
        return u.to(matrix.dtype), s.to(matrix.dtype), vh.to(matrix.dtype)


def top_singular(
    matrix: torch.Tensor, rank: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``rank`` leading singular triplets ``(U [m, rank], s [rank], Vh [rank, n])``."""
    u, s, vh = svd(matrix)
    return u[:, :rank], s[:rank], vh[:rank, :]


def polar_factor(matrix: torch.Tensor) -> torch.Tensor:
    """The orthonormal factor ``P Q^T`` of ``matrix = P S Q^T`` (its thin SVD): the matrix with
    orthonormal columns nearest to ``matrix`` (orthogonal Procrustes), how TSV and Iso-CTS
    orthogonalize concatenated singular vectors."""
    p, _, qh = svd(matrix)
    return p @ qh


def reassemble(u: torch.Tensor, s: torch.Tensor, vh: torch.Tensor) -> torch.Tensor:
    """``U diag(s) Vh`` after orthogonalizing the columns of ``U`` and the rows of ``Vh``."""
    u_orth = polar_factor(u)
    vh_orth = polar_factor(vh.T).T
    return (u_orth * s) @ vh_orth


def low_rank(matrix: torch.Tensor, rank: int) -> torch.Tensor:
    """The best rank-``rank`` approximation of ``matrix`` (Eckart-Young): its truncated SVD."""
    u, s, vh = top_singular(matrix, rank)
    return (u * s) @ vh


def merged_by_matrix(
    tensors: torch.Tensor,
    base: torch.Tensor,
    weight: torch.Tensor,
    alpha: float,
    combine: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """``base + alpha · combine(task vectors)`` for a matrix, the mean task vector otherwise:
    the frame TSV-M and Iso-C/CTS share (their papers merge 2-D layers in a subspace and every
    other tensor by task arithmetic)."""
    deltas = task_vectors(tensors, base, weight)
    merged = combine(deltas) if is_matrix(base) else deltas.mean(0)
    return base + alpha * merged
