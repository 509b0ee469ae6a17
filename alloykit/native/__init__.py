"""Fused CPU kernels for the task-vector methods, loaded with ctypes from ``kernels.c``.

This module binds the library and calls it on memory addresses (numpy buffers, or anything
with a pointer); it does not import torch, so that merges of bfloat16 checkpoints as stored
run without it (:mod:`alloykit.engine.raw`). The same functions on torch tensors are in
:mod:`alloykit.native.tensors`, reachable from here by name (``native.task_vectors``...)
and imported on first use.

The C file is compiled when alloykit is installed (an optional extension: where no compiler
exists, installation still succeeds and the torch path of every method is used). The kernels
compute exactly what the torch path computes, operation for operation in float32; tests
compare the two. ``ALLOYKIT_NATIVE=0`` in the environment turns them off.

On x86-64 the file is built twice (see setup.py): a portable build, and an x86-64-v3 build
(AVX2, ...) loaded instead where the CPU has it; ``ALLOYKIT_NATIVE=portable`` keeps the
portable one. Both compute the same bits (the tests run each). ``ALLOYKIT_NATIVE_PATH`` names
another folder to load the builds from (CI's sanitized builds).

Why C and not torch: a TIES merge written as tensor operations makes ~25 passes over every
value through memory; a fused loop makes one (see docs/engine.md for the measurements).
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from enum import IntEnum
from pathlib import Path

import numpy as np

MAX_MODELS = 64
"""The fused merge keeps one value per model in registers; more models take the torch path."""


class KernelArgumentError(RuntimeError):
    """A kernel was called with buffers it cannot take (wrong dtype, layout or size): a bug in
    the caller, caught before any C code runs."""


class KeepMode(IntEnum):
    ALL = 0
    NONE = 1
    TOP = 2
    BAND = 3
    RANDOM = 4
    MASK = 5


class Rescale(IntEnum):
    NONE = 0
    PROBABILITY = 1
    FACTOR = 2


class SignVote(IntEnum):
    NONE = 0
    TOTAL = 1
    FREQUENCY = 2


class Pcg64(ctypes.Structure):
    """numpy's PCG64 state: the C kernels continue numpy's stream exactly."""

    _fields_ = (
        ("state_hi", ctypes.c_uint64),
        ("state_lo", ctypes.c_uint64),
        ("inc_hi", ctypes.c_uint64),
        ("inc_lo", ctypes.c_uint64),
        ("has_uint32", ctypes.c_uint32),
        ("uinteger", ctypes.c_uint32),
    )

    @classmethod
    def seeded(cls, seed: int) -> Pcg64:
        """The state of ``numpy.random.PCG64(seed)``."""
        state = np.random.PCG64(seed).state
        inner = state["state"]
        mask = (1 << 64) - 1
        return cls(
            inner["state"] >> 64,
            inner["state"] & mask,
            inner["inc"] >> 64,
            inner["inc"] & mask,
            state["has_uint32"],
            state["uinteger"],
        )


class Keep(ctypes.Structure):
    """Which entries of one model's task vector survive, how they are rescaled, its weight."""

    _fields_ = (
        ("mode", ctypes.c_int32),
        ("rescale", ctypes.c_int32),
        ("cut", ctypes.c_float * 2),
        ("all_equal", ctypes.c_int32 * 2),
        ("left", ctypes.c_int64 * 2),
        ("probability", ctypes.c_float),
        ("factor", ctypes.c_float),
        ("weight", ctypes.c_float),
        ("probabilities", ctypes.c_void_p),
        ("draws", ctypes.POINTER(Pcg64)),
        ("mask", ctypes.c_void_p),
        ("mask_offset", ctypes.c_int64),
    )


BUILDS = {"portable": "_kernels", "x86-64-v3": "_kernels_x86_64_v3"}
"""The kernels' builds, by name: the stem of each one's compiled library."""


def _library_paths() -> dict[str, Path]:
    """The compiled builds found next to this file, or in the folder ``ALLOYKIT_NATIVE_PATH``
    names (CI points it at builds with AddressSanitizer, see ``.ci/sanitize``)."""
    here = Path(os.environ.get("ALLOYKIT_NATIVE_PATH") or Path(__file__).parent)
    found = {}
    for build, stem in BUILDS.items():
        files = [f for f in sorted(here.glob(f"{stem}.*")) if f.suffix in (".so", ".pyd")]
        if files:
            found[build] = files[0]
    return found


def _runs_x86_64_v3(paths: dict[str, Path]) -> bool:
    """Whether the x86-64-v3 build is installed and this CPU runs it (the portable build,
    which runs anywhere, asks the CPU)."""
    if "x86-64-v3" not in paths or "portable" not in paths:
        return False
    return bool(ctypes.CDLL(str(paths["portable"])).ak_supports_x86_64_v3())


def _load(build: str | None = None) -> ctypes.CDLL | None:
    """The library of ``build``; by default the fastest one this CPU runs (None if none)."""
    setting = os.environ.get("ALLOYKIT_NATIVE", "1")
    if setting == "0":
        return None
    paths = _library_paths()
    if build is None:
        fast = setting != "portable" and _runs_x86_64_v3(paths)
        build = "x86-64-v3" if fast else "portable"
    if build not in paths:
        return None
    return _bound(ctypes.CDLL(str(paths[build])))


def _bound(lib: ctypes.CDLL) -> ctypes.CDLL:
    """``lib`` with the argument and result types of its functions declared."""
    p, i64, i32, f32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32, ctypes.c_float
    lib.ak_uniform.argtypes = (ctypes.POINTER(Pcg64), i64, p)
    lib.ak_uniform.restype = None
    lib.ak_count_digits.argtypes = (p, p, i32, i64, i32, i32, i64, p)
    lib.ak_count_digits.restype = None
    keeps = ctypes.POINTER(Keep)
    lib.ak_l1_norms.argtypes = (p, p, i32, i64, i32, keeps, p)
    lib.ak_l1_norms.restype = ctypes.c_int
    lib.ak_task_vectors.argtypes = (p, p, i32, i64, i64, i32, keeps, i32, i32, f32, f32, p)
    lib.ak_task_vectors.restype = ctypes.c_int
    lib.ak_weighted_sum.argtypes = (p, i32, i64, i32, p, f32, p)
    lib.ak_weighted_sum.restype = None
    lib.ak_offset_products.argtypes = (p, p, i32, i64, i64, i32, p)
    lib.ak_offset_products.restype = ctypes.c_int
    lib.ak_della_probabilities.argtypes = (p, p, i32, i64, i64, f32, f32, p)
    lib.ak_della_probabilities.restype = ctypes.c_int
    lib.ak_crc32c.argtypes = (p, i64, ctypes.c_uint32)
    lib.ak_crc32c.restype = ctypes.c_uint32
    lib.ak_finite_bf16.argtypes = (p, i64)
    lib.ak_finite_bf16.restype = ctypes.c_int
    for name in ("ak_widen_bf16", "ak_narrow_bf16"):
        getattr(lib, name).argtypes = (p, p, i64)
        getattr(lib, name).restype = ctypes.c_int
    return lib


_lib = _load()


@contextmanager
def turned_off() -> Iterator[None]:
    """Use the torch path inside this block (tests compare the two paths)."""
    global _lib
    saved, _lib = _lib, None
    try:
        yield
    finally:
        _lib = saved


def builds() -> list[str]:
    """The builds this machine can run (tests run the kernels of each)."""
    found = _library_paths()
    portable = ["portable"] if "portable" in found else []
    return [*portable, "x86-64-v3"] if _runs_x86_64_v3(found) else portable


@contextmanager
def using(build: str) -> Iterator[None]:
    """Run the kernels of ``build`` inside this block."""
    global _lib
    lib = _load(build)
    if lib is None:
        raise ValueError(f"the {build} build of the kernels is not installed")
    saved, _lib = _lib, lib
    try:
        yield
    finally:
        _lib = saved


def available() -> bool:
    """Whether the compiled kernels are installed (and not turned off)."""
    return _lib is not None


def crc32c_in_hardware() -> bool:
    """Whether :func:`crc32c` runs on the CPU's crc32 instruction (the x86-64-v3 build)."""
    return _lib is not None and bool(_lib.ak_crc32c_in_hardware())


def crc32c(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """CRC-32C (Castagnoli) of ``data``, continuing ``crc`` as ``zlib.crc32`` continues its own."""
    assert _lib is not None
    array = np.frombuffer(data, dtype=np.uint8)  # a view, read-only buffers included
    return int(_lib.ak_crc32c(array.ctypes.data, array.nbytes, crc))


def loaded() -> ctypes.CDLL:
    """The kernels' library in use (see :func:`turned_off`, :func:`using`)."""
    if _lib is None:
        raise RuntimeError("the compiled kernels are not available")
    return _lib


def _arguments(what: str, numel: int, n: int, *addresses: int) -> None:
    """The address-level functions below take buffers whose sizes their callers checked (the
    torch forms in :mod:`alloykit.native.tensors`, the lane's numpy buffers); what they can
    still refuse before C dereferences them: counts out of range, addresses that are not."""
    if numel < 0 or not 0 < n <= MAX_MODELS:
        raise KernelArgumentError(f"{what}: {numel} values of {n} models (1..{MAX_MODELS})")
    for address in addresses:
        if not isinstance(address, int) or (address <= 0 and numel > 0):
            raise KernelArgumentError(f"{what}: {address!r} is not a buffer's address")


def weighted_sum_at(
    x: int, bf16: bool, numel: int, n: int, weights: int, divide_by: float, out: int
) -> None:
    """``(sum_m weights[m] * x[m]) / divide_by`` into float32 ``out``: ``x`` holds ``n``
    contiguous rows of ``numel`` values (float32, or bfloat16 with ``bf16``), ``weights`` ``n``
    float32 values; summed in model order."""
    _arguments("weighted_sum", numel, n, x, weights, out)
    loaded().ak_weighted_sum(x, int(bf16), numel, n, weights, divide_by, out)


def task_vectors_at(
    x: int,
    base: int,
    bf16: bool,
    numel: int,
    stride: int,
    keeps: Sequence[Keep] | ctypes.Array[Keep],
    *,
    sign: SignVote,
    normalize: bool,
    divide_by: float,
    scale: float,
    out: int,
) -> None:
    """``base + scale * combine(weight_i * thin_i(x_i - base))`` into float32 ``out``: model
    ``i``'s ``numel`` values start ``i * stride`` elements after ``x`` (see ``ak_task_vectors``
    in kernels.c; ``out`` may be ``x`` when ``x`` is float32)."""
    n = len(keeps)
    _arguments("task_vectors", numel, n, x, base, out)
    if stride < numel and n > 1:
        raise KernelArgumentError(f"task_vectors: stride {stride} < {numel} values")
    array = keeps if isinstance(keeps, ctypes.Array) else (Keep * n)(*keeps)
    status = loaded().ak_task_vectors(
        x, base, int(bf16), numel, stride, n, array, int(sign), int(normalize), divide_by,
        scale, out,
    )  # fmt: skip
    if status:
        raise MemoryError("task vectors: no memory for a block's buffers")
    if array is not keeps:
        take_back(keeps, array)


def keep_every(weights: Sequence[float]) -> ctypes.Array[Keep]:
    """Keep values that keep every entry of each model's task vector, weighted by
    ``weights``, in the array the kernels read: :func:`task_vectors_at` takes it as it is,
    with no copy in and out (the per-tensor cost that matters in an in-memory re-merge)."""
    array = (Keep * len(weights))()
    for keep, weight in zip(array, weights, strict=True):
        keep.mode, keep.weight = KeepMode.ALL, weight
    return array


def take_back(keeps: Sequence[Keep], array: ctypes.Array[Keep]) -> None:
    """Copy into ``keeps`` what a kernel advanced in their copies ``array`` (the hand-out of
    tied magnitudes, by the modes that hand out; generators are shared through their
    pointers)."""
    for kept, updated in zip(keeps, array, strict=True):
        if kept.mode in _HANDS_OUT:
            kept.left[0], kept.left[1] = updated.left[0], updated.left[1]


_HANDS_OUT = frozenset((KeepMode.TOP, KeepMode.BAND))


def l1_norms_at(
    models: list[int], base: int, bf16: bool, numel: int, keeps: list[Keep]
) -> list[tuple[float, float]]:
    """L1 norms of each task vector ``models[m] - base`` (addresses of ``numel`` values)
    before and after thinning by ``keeps[m]`` (not rescaled), measured together so that the
    models' generators draw side by side."""
    n = len(models)
    _arguments("l1_norms", numel, n, base, *models)
    if len(keeps) != n:
        raise KernelArgumentError(f"l1_norms: {len(keeps)} Keep values for {n} models")
    sums = (ctypes.c_double * (2 * n))()
    pointers = (ctypes.c_void_p * n)(*models)
    array = (Keep * n)(*keeps)
    if loaded().ak_l1_norms(pointers, base, int(bf16), numel, n, array, sums):
        raise MemoryError("l1 norms: no memory for a block's draws")
    take_back(keeps, array)
    return [(sums[2 * m], sums[2 * m + 1]) for m in range(n)]


def offset_products_at(
    x: int, base: int, bf16: bool, numel: int, stride: int, n: int
) -> list[float]:
    """Squared norms of the task vectors ``x_m - base`` (laid out as in
    :func:`task_vectors_at`), then the dot products of every pair in
    :func:`itertools.combinations` order, summed in float64 between blocks."""
    _arguments("offset_products", numel, n, x, base)
    if stride < numel and n > 1:
        raise KernelArgumentError(f"offset_products: stride {stride} < {numel} values")
    sums = (ctypes.c_double * (n + n * (n - 1) // 2))()
    if loaded().ak_offset_products(x, base, int(bf16), numel, stride, n, sums):
        raise MemoryError("model stock: no memory for a block's task vectors")
    return list(sums)


def finite_bf16_at(src: int, numel: int) -> bool:
    """Whether every one of the ``numel`` bfloat16 values at ``src`` is finite."""
    _arguments("finite_bf16", numel, 1, src)
    return bool(loaded().ak_finite_bf16(src, numel))


def narrow_bf16_at(src: int, out: int, numel: int) -> bool:
    """Round ``numel`` float32 values at ``src`` to bfloat16 at ``out`` (to nearest even, as
    torch does), in one pass with their finiteness check; returns whether all are finite."""
    _arguments("narrow_bf16", numel, 1, src, out)
    return bool(loaded().ak_narrow_bf16(src, out, numel))


_TENSOR_FUNCTIONS = frozenset(
    (
        "INPUT_DTYPES", "usable", "usable_stored", "uniform", "count_digits", "l1_norms",
        "task_vectors", "weighted_sum", "offset_products", "della_probabilities",
        "widen_bf16", "finite_bf16", "narrow_bf16", "widens", "narrows", "scratch",
    )
)  # fmt: skip


def __getattr__(name: str) -> object:
    """The torch-tensor forms (:mod:`alloykit.native.tensors`), imported on first use."""
    if name in _TENSOR_FUNCTIONS:
        from alloykit.native import tensors

        found = getattr(tensors, name)
        globals()[name] = found  # found directly from now on, without this call
        return found
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
