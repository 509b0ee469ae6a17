"""Weighted averaging of whole weights: model soups and plain passthrough."""

from __future__ import annotations

import torch

from alloykit import native
from alloykit.methods.coefficients import weight_divisor
from alloykit.methods.registry import register


def broadcast_weights(weights: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape per-model values ``[n]`` so they broadcast against stacked tensors ``[n, ...]``."""
    return weights.reshape(-1, *([1] * (like.dim() - 1)))


def _weighted_average(
    tensors: torch.Tensor, weight: torch.Tensor, normalize: bool, *, fused: bool
) -> torch.Tensor:
    """``sum_m weight_m * tensors_m`` (over the weights' sum with ``normalize``), by the fused
    kernel or by torch, in the same order, so both paths agree to the bit."""
    divide_by = weight_divisor(weight.tolist(), normalize)
    if fused and 0 < tensors.shape[0] <= native.MAX_MODELS:
        out = torch.empty(tensors.shape[1:], dtype=torch.float32)
        weights = weight.to(torch.float32)
        return native.weighted_sum(tensors, weights, divide_by, out)
    weights = weight.to(tensors.dtype)
    merged = tensors[0] * weights[0]
    for m in range(1, tensors.shape[0]):
        merged.add_(tensors[m] * weights[m])
    return merged / divide_by if divide_by != 1.0 else merged


def _linear_of_stored(
    tensors: torch.Tensor, base: torch.Tensor | None, *, weight: torch.Tensor, normalize: bool
) -> torch.Tensor:
    """linear of bfloat16 inputs as stored, in float32 (the fused kernel widens as it reads)."""
    if native.usable_stored(tensors):
        return _weighted_average(tensors, weight, normalize, fused=True)
    return linear(tensors.float(), base, weight=weight, normalize=normalize)


@register("linear", stored_kernel=_linear_of_stored)
def linear(
    tensors: torch.Tensor, base: torch.Tensor | None, *, weight: torch.Tensor, normalize: bool
) -> torch.Tensor:
    return _weighted_average(tensors, weight, normalize, fused=native.usable(tensors))


@register("passthrough")
def passthrough(
    tensors: torch.Tensor, base: torch.Tensor | None, *, scale: torch.Tensor
) -> torch.Tensor:
    return tensors[0] * scale[0]
