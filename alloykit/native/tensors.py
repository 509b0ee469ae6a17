"""The fused kernels of :mod:`alloykit.native` on torch tensors: what the methods' torch paths
call. Each function checks what a C loop cannot (dtype, layout, device, and that every buffer
holds as many values as the kernel will read or write) and only then passes pointers: a wrong
call is a :class:`~alloykit.native.KernelArgumentError` naming the buffer, never memory
corruption (a float32 chunk handed to the bfloat16 widening once overran its buffer)."""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Sequence

import torch

from alloykit import native
from alloykit.native import MAX_MODELS, Keep, KernelArgumentError, Pcg64, SignVote

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
        t is not None and t.is_cpu and t.dtype == dtype and _slices_contiguous(t) for t in tensors
    )


def _slices_contiguous(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` is contiguous, or a stack ``[n, ...]`` of contiguous slices at any
    distance (rows of inputs held whole, see the engine)."""
    return tensor.is_contiguous() or (tensor.dim() > 1 and tensor[0].is_contiguous())


def _flat(
    what: str, tensor: torch.Tensor, dtypes: tuple[torch.dtype, ...], numel: int | None = None
) -> int:
    """The address of ``tensor`` after checking that it is a contiguous CPU tensor of one of
    ``dtypes`` holding ``numel`` values (when given)."""
    if not isinstance(tensor, torch.Tensor):
        raise KernelArgumentError(f"{what}: expected a tensor, got {type(tensor).__name__}")
    if not tensor.is_cpu:
        raise KernelArgumentError(f"{what}: the kernels read CPU memory, not {tensor.device}")
    if tensor.dtype not in dtypes:
        names = " or ".join(str(d) for d in dtypes)
        raise KernelArgumentError(f"{what}: expected {names}, got {tensor.dtype}")
    if not tensor.is_contiguous():
        raise KernelArgumentError(f"{what}: expected a contiguous tensor")
    if numel is not None and tensor.numel() != numel:
        raise KernelArgumentError(f"{what}: expected {numel} values, got {tensor.numel()}")
    return tensor.data_ptr()


def _stack(what: str, tensor: torch.Tensor, dtype: torch.dtype, numel: int) -> tuple[int, int]:
    """The address and stride (in elements) of a stack ``[n, ...]`` of contiguous slices of
    ``numel`` values each, apart (torch keeps every view's slices inside its storage)."""
    if tensor.dim() < 1 or tensor.shape[0] < 1:
        raise KernelArgumentError(f"{what}: expected a stack [n, ...] of n >= 1 inputs")
    if tensor.is_contiguous():  # the common case, checked without a view of a slice
        return _flat(what, tensor, (dtype,), numel * tensor.shape[0]), numel
    _flat(f"{what}[0]", tensor[0], (dtype,), numel)
    stride = tensor.stride(0) if tensor.shape[0] > 1 else numel
    if tensor.shape[0] > 1 and stride < numel:
        raise KernelArgumentError(f"{what}: slices overlap (stride {stride} < {numel} values)")
    return tensor.data_ptr(), stride


def _input_dtype(*inputs: torch.Tensor) -> torch.dtype:
    """The one dtype of the kernels' inputs (float32, or bfloat16 as stored)."""
    dtype = inputs[0].dtype
    if dtype not in INPUT_DTYPES or any(t.dtype != dtype for t in inputs):
        raise KernelArgumentError(
            f"the kernels read float32 or bfloat16 inputs of one dtype, not "
            f"{ {t.dtype for t in inputs} }"
        )
    return dtype


def _models(what: str, count: int) -> None:
    if not 0 < count <= MAX_MODELS:
        raise KernelArgumentError(f"{what}: 1..{MAX_MODELS} models, got {count}")


def _keeps(keeps: Sequence[Keep] | ctypes.Array[Keep], count: int) -> None:
    if isinstance(keeps, ctypes.Array):
        right = keeps._type_ is Keep and len(keeps) == count
    else:
        right = len(keeps) == count and all(isinstance(k, Keep) for k in keeps)
    if not right:
        raise KernelArgumentError(f"expected {count} Keep values, one per model")


def uniform(state: Pcg64, out: torch.Tensor) -> torch.Tensor:
    """Fill float32 ``out`` with the next numbers of ``state``'s stream."""
    if not isinstance(state, Pcg64):
        raise KernelArgumentError("uniform: state must be a Pcg64")
    address = _flat("uniform out", out, (torch.float32,))
    native.loaded().ak_uniform(ctypes.byref(state), out.numel(), address)
    return out


def count_digits(
    x: torch.Tensor, base: torch.Tensor, shift: int, level: int, prefix: int, counts: torch.Tensor
) -> None:
    """Add to int64 ``counts`` [2, 65536] the 16-bit digits at ``shift`` of ``|x - base|``'s
    bit patterns whose higher bits equal ``prefix`` (every entry at level 0); the digits'
    counts are the sum of the two tables."""
    if counts.shape != (2, 1 << 16):
        raise KernelArgumentError(f"count_digits: counts must be [2, 65536], not {counts.shape}")
    table = _flat("count_digits counts", counts, (torch.int64,))
    dtype = _input_dtype(x, base)
    x_at = _flat("count_digits x", x, (dtype,))
    base_at = _flat("count_digits base", base, (dtype,), x.numel())
    native.loaded().ak_count_digits(
        x_at, base_at, int(dtype == torch.bfloat16), x.numel(), shift, level, prefix, table
    )


def l1_norms(
    xs: list[torch.Tensor], base: torch.Tensor, keeps: list[Keep]
) -> list[tuple[float, float]]:
    """L1 norms of each ``xs[m] - base`` before and after thinning by ``keeps[m]`` (see
    :func:`alloykit.native.l1_norms_at`)."""
    _models("l1_norms", len(xs))
    _keeps(keeps, len(xs))
    dtype = _input_dtype(base, *xs)
    base_at = _flat("l1_norms base", base, (dtype,))
    models = [_flat(f"l1_norms x[{m}]", x, (dtype,), base.numel()) for m, x in enumerate(xs)]
    return native.l1_norms_at(models, base_at, dtype == torch.bfloat16, base.numel(), keeps)


def task_vectors(
    x: torch.Tensor,
    base: torch.Tensor,
    keeps: Sequence[Keep] | ctypes.Array[Keep],
    *,
    sign: SignVote,
    normalize: bool,
    divide_by: float,
    scale: float,
    out: torch.Tensor,
) -> torch.Tensor:
    """``base + scale * combine(weight_i * thin_i(x_i - base))`` into float32 ``out`` (which
    may be ``x[0]`` when ``x`` is float32): see :func:`alloykit.native.task_vectors_at`."""
    _models("task_vectors", x.shape[0] if x.dim() else 0)
    _keeps(keeps, x.shape[0])
    dtype = _input_dtype(x, base)
    base_at = _flat("task_vectors base", base, (dtype,))
    x_at, stride = _stack("task_vectors x", x, dtype, base.numel())
    out_at = _flat("task_vectors out", out, (torch.float32,), base.numel())
    native.task_vectors_at(
        x_at, base_at, dtype == torch.bfloat16, base.numel(), stride, keeps, sign=sign,
        normalize=normalize, divide_by=divide_by, scale=scale, out=out_at,
    )  # fmt: skip
    return out


def weighted_sum(
    x: torch.Tensor, weights: torch.Tensor, divide_by: float, out: torch.Tensor
) -> torch.Tensor:
    """``(sum_m weights[m] * x[m]) / divide_by`` into ``out``, summed in model order; ``x`` is
    ``[n, ...]`` (float32 or bfloat16), ``weights`` and ``out`` float32."""
    x = x.contiguous()
    _models("weighted_sum", x.shape[0] if x.dim() else 0)
    numel = x[0].numel()
    x_at = _flat("weighted_sum x", x, (_input_dtype(x),))
    weights_at = _flat("weighted_sum weights", weights, (torch.float32,), x.shape[0])
    out_at = _flat("weighted_sum out", out, (torch.float32,), numel)
    native.weighted_sum_at(
        x_at, x.dtype == torch.bfloat16, numel, x.shape[0], weights_at, divide_by, out_at
    )
    return out


def offset_products(x: torch.Tensor, base: torch.Tensor) -> list[float]:
    """Squared norms of the task vectors ``x[m] - base``, then the dot products of every pair
    in :func:`itertools.combinations` order, summed in float64 between blocks."""
    _models("offset_products", x.shape[0] if x.dim() else 0)
    dtype = _input_dtype(x, base)
    base_at = _flat("offset_products base", base, (dtype,))
    x_at, stride = _stack("offset_products x", x, dtype, base.numel())
    return native.offset_products_at(
        x_at, base_at, dtype == torch.bfloat16, base.numel(), stride, x.shape[0]
    )


def della_probabilities(
    x: torch.Tensor, base: torch.Tensor, width: int, span: float, low: float, out: torch.Tensor
) -> torch.Tensor:
    """Keep probabilities of ``|x - base|`` ranked within rows of ``width`` entries:
    ``rank / (width - 1) * span + low``."""
    if width < 1 or x.numel() % width:
        raise KernelArgumentError(f"della: {x.numel()} values are not rows of {width}")
    dtype = _input_dtype(x, base)
    x_at = _flat("della x", x, (dtype,))
    base_at = _flat("della base", base, (dtype,), x.numel())
    out_at = _flat("della out", out, (torch.float32,), x.numel())
    rows, flag = x.numel() // width, int(dtype == torch.bfloat16)
    lib = native.loaded()
    if lib.ak_della_probabilities(x_at, base_at, flag, rows, width, span, low, out_at):
        raise MemoryError("della: no memory for a row's ranks")
    return out


def widen_bf16(src: torch.Tensor, out: torch.Tensor) -> bool:
    """``out.copy_(src)`` for contiguous bfloat16 ``src`` and float32 ``out`` on CPU, in one
    pass with the finiteness check; returns whether every value is finite."""
    src_at = _flat("widen_bf16 src", src, (torch.bfloat16,))
    out_at = _flat("widen_bf16 out", out, (torch.float32,), src.numel())
    return bool(native.loaded().ak_widen_bf16(src_at, out_at, src.numel()))


def finite_bf16(src: torch.Tensor) -> bool:
    """Whether every value of contiguous bfloat16 ``src`` (CPU) is finite."""
    return native.finite_bf16_at(_flat("finite_bf16 src", src, (torch.bfloat16,)), src.numel())


def narrow_bf16(src: torch.Tensor, out: torch.Tensor) -> bool:
    """``out.copy_(src)`` for contiguous float32 ``src`` and bfloat16 ``out`` on CPU (rounded to
    nearest even, as torch does), in one pass with the finiteness check of ``src``."""
    src_at = _flat("narrow_bf16 src", src, (torch.float32,))
    out_at = _flat("narrow_bf16 out", out, (torch.bfloat16,), src.numel())
    return native.narrow_bf16_at(src_at, out_at, src.numel())


def widens(src: torch.Tensor, out: torch.Tensor) -> bool:
    """Whether :func:`widen_bf16` can copy ``src`` into ``out`` (bfloat16 into float32)."""
    return _converts(src, out, torch.bfloat16, torch.float32)


def narrows(src: torch.Tensor, out: torch.Tensor) -> bool:
    """Whether :func:`narrow_bf16` can copy ``src`` into ``out`` (float32 into bfloat16)."""
    return _converts(src, out, torch.float32, torch.bfloat16)


def _converts(
    src: torch.Tensor, out: torch.Tensor, src_dtype: torch.dtype, out_dtype: torch.dtype
) -> bool:
    if not native.available() or src.device.type != "cpu" or out.device.type != "cpu":
        return False
    if not (src.is_contiguous() and out.is_contiguous() and src.shape == out.shape):
        return False
    return src.dtype == src_dtype and out.dtype == out_dtype


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
