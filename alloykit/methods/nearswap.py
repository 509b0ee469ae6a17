"""NearSwap: take the other model's value only where it is close to the base's.

From the model card of QuartetAnemoi-70B-t0.0001, alchemonaut 2024
(https://huggingface.co/alchemonaut/QuartetAnemoi-70B-t0.0001; no paper). Each parameter moves
from the base to the other model by ``clamp(t / |base − other|, 0, 1)``: parameters that differ
by less than ``t`` are swapped outright, distant ones barely move.
"""

from __future__ import annotations

import torch

from alloykit.methods.registry import register


@register("nearswap")
def nearswap(tensors: torch.Tensor, base: torch.Tensor, *, t: float) -> torch.Tensor:
    other = tensors[0]
    share = (t / (base - other).abs().clamp(min=1e-6)).clamp(0.0, 1.0)
    return share * other + (1 - share) * base
