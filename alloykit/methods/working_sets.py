"""Peak working sets of the whole-matrix kernels, as functions of the tensor's shape.

A whole-tensor kernel allocates and frees its temporaries within one tensor; their peak is part
of the memory bound the plan states per entry (:meth:`alloykit.plan.Plan.working_bytes`), which
the engine's byte budget admits and ``--dry-run`` prints. For methods that decompose matrices
that peak is far from a constant multiple of the output: it counts each task's singular vectors
and LAPACK's workspace, which grow with the number of models and with ``min(rows, cols)``.
Each function here follows its kernel's steps and returns the most float32 values it holds at
once beyond its stacked inputs (the returned tensor included), for a tensor of ``shape`` merged
from ``models`` models. ``benchmarks/README.md`` compares them with measured peaks. Plain
Python: contracts import this without torch.
"""

from __future__ import annotations

from math import prod

Shape = tuple[int, ...]

WORKSPACE_PER_SINGULAR_VALUE = 6500
"""Workspace of torch's CPU SVD (LAPACK ``gesdd`` in MKL, torch 2.13) beyond ``3 k^2`` values,
per singular value ``k``: fitted to the peaks measured for shapes from 512 x 512 to
64000 x 512 (benchmarks/README.md, "SVD workspace")."""


def svd_values(rows: int, cols: int) -> int:
    """Peak values of a thin SVD of a ``rows x cols`` matrix: the copy LAPACK overwrites, the
    factors ``U [rows, k]``, ``s``, ``Vh [k, cols]`` (``k = min(rows, cols)``) and the
    workspace of ``gesdd``."""
    k = min(rows, cols)
    workspace = 3 * k * k + WORKSPACE_PER_SINGULAR_VALUE * k
    return rows * cols + factor_values(rows, cols) + workspace


def factor_values(rows: int, cols: int) -> int:
    """Values of one matrix's thin SVD factors ``U``, ``s`` and ``Vh``."""
    k = min(rows, cols)
    return k * (rows + cols + 1)


def averaged_values(shape: Shape, models: int) -> int:
    """What the subspace methods do to a tensor that is not a matrix (the mean task vector):
    the task vectors, their mean, its scaled copy and the result."""
    return (models + 3) * prod(shape)


def task_singular_vectors(shape: Shape, models: int) -> int:
    """TSV-M (:mod:`alloykit.methods.tsv`): the task vectors, every task's factors (kept until
    the layer is reassembled), their concatenation and then the largest of the SVD that
    orthogonalizes it, the reassembly (orthogonal factors, scaled ``U``, product) and the sum
    with the base (the scaled update and the result)."""
    if len(shape) != 2:
        return averaged_values(shape, models)
    rows, cols = shape
    k = min(rows, cols)
    matrix = rows * cols
    factors = factor_values(rows, cols)
    reassembly = factors + rows * k + matrix
    return (
        models * matrix + (models + 1) * factors + max(reassembly, svd_values(rows, k), 2 * matrix)
    )


def isotropic_common(shape: Shape, models: int) -> int:
    """Iso-C (:func:`alloykit.methods.isotropic.isotropic_sum`): the task vectors, their sum,
    then its SVD or the rebuilt matrix with the scaled sum."""
    if len(shape) != 2:
        return averaged_values(shape, models)
    rows, cols = shape
    matrix = rows * cols
    rebuilt = factor_values(rows, cols) + min(rows, cols) * rows + matrix
    return models * matrix + matrix + max(svd_values(rows, cols), rebuilt, 2 * matrix)


def isotropic_common_and_specific(shape: Shape, models: int) -> int:
    """Iso-CTS (:func:`alloykit.methods.isotropic.isotropic_common_and_specific`): as TSV-M, with
    the common subspace's factors and a task's projected residual held beside the tasks'."""
    if len(shape) != 2:
        return averaged_values(shape, models)
    rows, cols = shape
    return task_singular_vectors(shape, models) + factor_values(rows, cols) + 2 * rows * cols


def centred_low_rank(shape: Shape, models: int) -> int:
    """CART (:mod:`alloykit.methods.cart`): the mean, the running sum of low-rank offsets and
    one centred task vector with its SVD at a time, whatever the number of models."""
    if len(shape) != 2:
        return prod(shape)
    rows, cols = shape
    return 3 * rows * cols + svd_values(rows, cols)


PRODUCT_BUFFERS = 4
"""``cols x cols`` matrices' worth of buffers that WUDI's matrix products add (MKL packs its
operands): fitted to the peaks measured on 2048 x 2048 and 512 x 1408 layers, where WUDI held
3-6 such matrices more than its own tensors (benchmarks/README.md)."""


def interference_descent(shape: Shape, models: int) -> int:
    """WUDI (:mod:`alloykit.methods.wudi`): the task vectors, then the larger of building the
    gradient's terms (``cols x cols`` Grams) and Adam's steps (the merged vector, its two
    moments, the gradient and its temporaries, the ``cols x cols`` term and the result), and
    the products' buffers (:data:`PRODUCT_BUFFERS`)."""
    if len(shape) != 2:
        return averaged_values(shape, models)
    rows, cols = shape
    matrix = rows * cols
    terms = 2 * matrix + 3 * cols * cols
    steps = 8 * matrix + cols * cols
    return models * matrix + max(terms, steps) + PRODUCT_BUFFERS * cols * cols
