"""Fused CPU kernels for the task-vector methods, loaded with ctypes from ``kernels.c``.

The C file is compiled when alloykit is installed (an optional extension: where no compiler
exists, installation still succeeds and the torch path of every method is used). The kernels
compute exactly what the torch path computes, operation for operation in float32; tests
compare the two. ``ALLOYKIT_NATIVE=0`` in the environment turns them off.

On x86-64 the file is built twice (see setup.py): a portable build, and an x86-64-v3 build
(AVX2, ...) loaded instead where the CPU has it; ``ALLOYKIT_NATIVE=portable`` keeps the
portable one. Both compute the same bits (the tests run each).

Why C and not torch: a TIES merge written as tensor operations makes ~25 passes over every
value through memory; a fused loop makes one (see docs/engine.md for the measurements).
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from enum import IntEnum
from pathlib import Path

import numpy as np
import torch

MAX_MODELS = 64
"""The fused merge keeps one value per model in registers; more models take the torch path."""


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
    """The compiled builds found next to this file."""
    here = Path(__file__).parent
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


INPUT_DTYPES = (torch.float32, torch.bfloat16)
"""What the kernels read: float32, or bfloat16 as stored (widened a block at a time); they
compute in float32 either way."""


def usable(*tensors: torch.Tensor | None) -> bool:
    """Whether the kernels can take these tensors: float32, contiguous, in CPU memory."""
    return _usable(torch.float32, tensors)


def usable_stored(*tensors: torch.Tensor | None) -> bool:
    """Whether the kernels can take these bfloat16 inputs as stored (computing in float32)."""
    return _usable(torch.bfloat16, tensors)


def _usable(dtype: torch.dtype, tensors: tuple[torch.Tensor | None, ...]) -> bool:
    return _lib is not None and all(
        t is not None and t.device.type == "cpu" and t.dtype == dtype and _slices_contiguous(t)
        for t in tensors
    )


def _slices_contiguous(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` is contiguous, or a stack ``[n, ...]`` of contiguous slices at any
    distance (rows of inputs held whole, see the engine)."""
    return tensor.is_contiguous() or (tensor.dim() > 1 and tensor[0].is_contiguous())


def _ptr(tensor: torch.Tensor) -> int:
    return tensor.data_ptr()


def _bf16(*inputs: torch.Tensor) -> int:
    """The kernels' ``bf16`` flag for inputs of one dtype."""
    dtypes = {t.dtype for t in inputs}
    if len(dtypes) != 1 or not dtypes <= set(INPUT_DTYPES):
        raise ValueError(f"the kernels read float32 or bfloat16 inputs of one dtype, not {dtypes}")
    return int(torch.bfloat16 in dtypes)


def uniform(state: Pcg64, out: torch.Tensor) -> torch.Tensor:
    """Fill float32 ``out`` with the next numbers of ``state``'s stream."""
    assert _lib is not None
    _lib.ak_uniform(ctypes.byref(state), out.numel(), _ptr(out))
    return out


def count_digits(
    x: torch.Tensor, base: torch.Tensor, shift: int, level: int, prefix: int, counts: torch.Tensor
) -> None:
    """Add to int64 ``counts`` [2, 65536] the 16-bit digits at ``shift`` of ``|x - base|``'s
    bit patterns whose higher bits equal ``prefix`` (every entry at level 0); the digits'
    counts are the sum of the two tables."""
    assert _lib is not None
    if counts.shape != (2, 1 << 16) or counts.dtype != torch.int64 or not counts.is_contiguous():
        raise ValueError(f"count_digits: counts must be int64 [2, 65536], not {counts.shape}")
    flag = _bf16(x, base)
    _lib.ak_count_digits(_ptr(x), _ptr(base), flag, x.numel(), shift, level, prefix, _ptr(counts))


def l1_norms(
    xs: list[torch.Tensor], base: torch.Tensor, keeps: list[Keep]
) -> list[tuple[float, float]]:
    """L1 norms of each ``xs[m] - base`` before and after thinning by ``keeps[m]`` (not
    rescaled), measured together so that the models' generators draw side by side."""
    assert _lib is not None
    n = len(xs)
    sums = (ctypes.c_double * (2 * n))()
    pointers = (ctypes.c_void_p * n)(*(_ptr(x) for x in xs))
    array = (Keep * n)(*keeps)
    if _lib.ak_l1_norms(pointers, _ptr(base), _bf16(base, *xs), base.numel(), n, array, sums):
        raise MemoryError("l1 norms: no memory for a block's draws")
    _take_back(keeps, array)
    return [(sums[2 * m], sums[2 * m + 1]) for m in range(n)]


def _take_back(keeps: list[Keep], array: ctypes.Array[Keep]) -> None:
    """Copy into ``keeps`` what a kernel advanced in their copies ``array`` (the hand-out of
    tied magnitudes; generators are shared through their pointers)."""
    for kept, updated in zip(keeps, array, strict=True):
        kept.left[0], kept.left[1] = updated.left[0], updated.left[1]


def task_vectors(
    x: torch.Tensor,
    base: torch.Tensor,
    keeps: list[Keep],
    *,
    sign: SignVote,
    normalize: bool,
    divide_by: float,
    scale: float,
    out: torch.Tensor,
) -> torch.Tensor:
    """``base + scale * combine(weight_i * thin_i(x_i - base))`` into float32 ``out`` (which
    may be ``x[0]`` when ``x`` is float32): see ``ak_task_vectors`` in kernels.c."""
    assert _lib is not None
    n = x.shape[0]
    array = (Keep * n)(*keeps)
    status = _lib.ak_task_vectors(
        _ptr(x), _ptr(base), _bf16(x, base), base.numel(), x.stride(0), n,
        array, int(sign), int(normalize), divide_by, scale, _ptr(out),
    )  # fmt: skip
    if status:
        raise MemoryError("task vectors: no memory for a block's buffers")
    _take_back(keeps, array)
    return out


def weighted_sum(
    x: torch.Tensor, weights: torch.Tensor, divide_by: float, out: torch.Tensor
) -> torch.Tensor:
    """``(sum_m weights[m] * x[m]) / divide_by`` into ``out``, summed in model order; ``x`` is
    ``[n, ...]`` (float32 or bfloat16), ``weights`` and ``out`` float32."""
    assert _lib is not None
    n = x.shape[0]
    x = x.contiguous()
    _lib.ak_weighted_sum(_ptr(x), _bf16(x), out.numel(), n, _ptr(weights), divide_by, _ptr(out))
    return out


def offset_products(x: torch.Tensor, base: torch.Tensor) -> list[float]:
    """Squared norms of the task vectors ``x[m] - base``, then the dot products of every pair
    in :func:`itertools.combinations` order, summed in float64 between blocks."""
    assert _lib is not None
    n = x.shape[0]
    sums = (ctypes.c_double * (n + n * (n - 1) // 2))()
    flag = _bf16(x, base)
    if _lib.ak_offset_products(_ptr(x), _ptr(base), flag, base.numel(), x.stride(0), n, sums):
        raise MemoryError("model stock: no memory for a block's task vectors")
    return list(sums)


def della_probabilities(
    x: torch.Tensor, base: torch.Tensor, width: int, span: float, low: float, out: torch.Tensor
) -> torch.Tensor:
    """Keep probabilities of ``|x - base|`` ranked within rows of ``width`` entries:
    ``rank / (width - 1) * span + low``."""
    assert _lib is not None
    rows = x.numel() // width
    flag = _bf16(x, base)
    if _lib.ak_della_probabilities(_ptr(x), _ptr(base), flag, rows, width, span, low, _ptr(out)):
        raise MemoryError("della: no memory for a row's ranks")
    return out


def crc32c_in_hardware() -> bool:
    """Whether :func:`crc32c` runs on the CPU's crc32 instruction (the x86-64-v3 build)."""
    return _lib is not None and bool(_lib.ak_crc32c_in_hardware())


def crc32c(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """CRC-32C (Castagnoli) of ``data``, continuing ``crc`` as ``zlib.crc32`` continues its own."""
    assert _lib is not None
    array = np.frombuffer(data, dtype=np.uint8)  # a view, read-only buffers included
    return int(_lib.ak_crc32c(array.ctypes.data, array.nbytes, crc))


def widen_bf16(src: torch.Tensor, out: torch.Tensor) -> bool:
    """``out.copy_(src)`` for contiguous bfloat16 ``src`` and float32 ``out`` on CPU, in one
    pass with the finiteness check; returns whether every value is finite."""
    assert _lib is not None
    return bool(_lib.ak_widen_bf16(_ptr(src), _ptr(out), src.numel()))


def finite_bf16(src: torch.Tensor) -> bool:
    """Whether every value of contiguous bfloat16 ``src`` (CPU) is finite."""
    assert _lib is not None
    return bool(_lib.ak_finite_bf16(_ptr(src), src.numel()))


def narrow_bf16(src: torch.Tensor, out: torch.Tensor) -> bool:
    """``out.copy_(src)`` for contiguous float32 ``src`` and bfloat16 ``out`` on CPU (rounded to
    nearest even, as torch does), in one pass with the finiteness check of ``src``."""
    assert _lib is not None
    return bool(_lib.ak_narrow_bf16(_ptr(src), _ptr(out), src.numel()))


def converts(src: torch.Tensor, out: torch.Tensor) -> bool:
    """Whether :func:`widen_bf16` or :func:`narrow_bf16` can copy ``src`` into ``out``."""
    if _lib is None or src.device.type != "cpu" or out.device.type != "cpu":
        return False
    if not (src.is_contiguous() and out.is_contiguous() and src.shape == out.shape):
        return False
    pair = (src.dtype, out.dtype)
    return pair in ((torch.bfloat16, torch.float32), (torch.float32, torch.bfloat16))


class _Scratch(threading.local):
    """Per-thread float32 buffers reused from chunk to chunk (DELLA's probabilities)."""

    def __init__(self) -> None:
        self.buffers: dict[int, torch.Tensor] = {}

    def get(self, slot: int, numel: int) -> torch.Tensor:
        held = self.buffers.get(slot)
        if held is None or held.numel() < numel:
            held = self.buffers[slot] = torch.empty(numel, dtype=torch.float32)
        return held[:numel]


scratch = _Scratch()
