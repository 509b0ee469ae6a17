"""The fused kernels of :mod:`alloykit.native` on torch tensors: what the methods' torch paths
call. Each function checks what a C loop cannot (dtype, layout, device) and passes pointers."""

from __future__ import annotations

import ctypes
import threading

import torch

from alloykit import native
from alloykit.native import Keep, Pcg64, SignVote

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
    return native.available() and all(
        t is not None and t.device.type == "cpu" and t.dtype == dtype and _slices_contiguous(t)
        for t in tensors
    )


def _slices_contiguous(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` is contiguous, or a stack ``[n, ...]`` of contiguous slices at any
    distance (rows of inputs held whole, see the engine)."""
    return tensor.is_contiguous() or (tensor.dim() > 1 and tensor[0].is_contiguous())


def _ptr(tensor: torch.Tensor) -> int:
    return tensor.data_ptr()


def _bf16(*inputs: torch.Tensor) -> bool:
    """The kernels' ``bf16`` flag for inputs of one dtype."""
    dtypes = {t.dtype for t in inputs}
    if len(dtypes) != 1 or not dtypes <= set(INPUT_DTYPES):
        raise ValueError(f"the kernels read float32 or bfloat16 inputs of one dtype, not {dtypes}")
    return torch.bfloat16 in dtypes


def uniform(state: Pcg64, out: torch.Tensor) -> torch.Tensor:
    """Fill float32 ``out`` with the next numbers of ``state``'s stream."""
    native.loaded().ak_uniform(ctypes.byref(state), out.numel(), _ptr(out))
    return out


def count_digits(
    x: torch.Tensor, base: torch.Tensor, shift: int, level: int, prefix: int, counts: torch.Tensor
) -> None:
    """Add to int64 ``counts`` [2, 65536] the 16-bit digits at ``shift`` of ``|x - base|``'s
    bit patterns whose higher bits equal ``prefix`` (every entry at level 0); the digits'
    counts are the sum of the two tables."""
    if counts.shape != (2, 1 << 16) or counts.dtype != torch.int64 or not counts.is_contiguous():
        raise ValueError(f"count_digits: counts must be int64 [2, 65536], not {counts.shape}")
    flag = int(_bf16(x, base))
    native.loaded().ak_count_digits(
        _ptr(x), _ptr(base), flag, x.numel(), shift, level, prefix, _ptr(counts)
    )


def l1_norms(
    xs: list[torch.Tensor], base: torch.Tensor, keeps: list[Keep]
) -> list[tuple[float, float]]:
    """L1 norms of each ``xs[m] - base`` before and after thinning by ``keeps[m]`` (see
    :func:`alloykit.native.l1_norms_at`)."""
    flag = _bf16(base, *xs)
    return native.l1_norms_at([_ptr(x) for x in xs], _ptr(base), flag, base.numel(), keeps)


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
    may be ``x[0]`` when ``x`` is float32): see :func:`alloykit.native.task_vectors_at`."""
    native.task_vectors_at(
        _ptr(x), _ptr(base), _bf16(x, base), base.numel(), x.stride(0), keeps, sign=sign,
        normalize=normalize, divide_by=divide_by, scale=scale, out=_ptr(out),
    )  # fmt: skip
    return out


def weighted_sum(
    x: torch.Tensor, weights: torch.Tensor, divide_by: float, out: torch.Tensor
) -> torch.Tensor:
    """``(sum_m weights[m] * x[m]) / divide_by`` into ``out``, summed in model order; ``x`` is
    ``[n, ...]`` (float32 or bfloat16), ``weights`` and ``out`` float32."""
    x = x.contiguous()
    native.weighted_sum_at(
        _ptr(x), _bf16(x), out.numel(), x.shape[0], _ptr(weights), divide_by, _ptr(out)
    )
    return out


def offset_products(x: torch.Tensor, base: torch.Tensor) -> list[float]:
    """Squared norms of the task vectors ``x[m] - base``, then the dot products of every pair
    in :func:`itertools.combinations` order, summed in float64 between blocks."""
    flag = _bf16(x, base)
    return native.offset_products_at(
        _ptr(x), _ptr(base), flag, base.numel(), x.stride(0), x.shape[0]
    )


def della_probabilities(
    x: torch.Tensor, base: torch.Tensor, width: int, span: float, low: float, out: torch.Tensor
) -> torch.Tensor:
    """Keep probabilities of ``|x - base|`` ranked within rows of ``width`` entries:
    ``rank / (width - 1) * span + low``."""
    rows = x.numel() // width
    flag = int(_bf16(x, base))
    lib = native.loaded()
    if lib.ak_della_probabilities(_ptr(x), _ptr(base), flag, rows, width, span, low, _ptr(out)):
        raise MemoryError("della: no memory for a row's ranks")
    return out


def widen_bf16(src: torch.Tensor, out: torch.Tensor) -> bool:
    """``out.copy_(src)`` for contiguous bfloat16 ``src`` and float32 ``out`` on CPU, in one
    pass with the finiteness check; returns whether every value is finite."""
    return bool(native.loaded().ak_widen_bf16(_ptr(src), _ptr(out), src.numel()))


def finite_bf16(src: torch.Tensor) -> bool:
    """Whether every value of contiguous bfloat16 ``src`` (CPU) is finite."""
    return native.finite_bf16_at(_ptr(src), src.numel())


def narrow_bf16(src: torch.Tensor, out: torch.Tensor) -> bool:
    """``out.copy_(src)`` for contiguous float32 ``src`` and bfloat16 ``out`` on CPU (rounded to
    nearest even, as torch does), in one pass with the finiteness check of ``src``."""
    return native.narrow_bf16_at(_ptr(src), _ptr(out), src.numel())


def converts(src: torch.Tensor, out: torch.Tensor) -> bool:
    """Whether :func:`widen_bf16` or :func:`narrow_bf16` can copy ``src`` into ``out``."""
    if not native.available() or src.device.type != "cpu" or out.device.type != "cpu":
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
