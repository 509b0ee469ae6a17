"""Call registered kernels the way the engine does: defaults filled, per-model values as
float32 ``[n]`` tensors, random kernels given ``seed``, statistics as float32 stacks
``[n, ...]`` (``None``, the method's fallback, unless given)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from alloykit.methods import Scope, get_method


def as_stack(
    models: torch.Tensor | Sequence[Sequence[float]] | Sequence[torch.Tensor],
) -> torch.Tensor:
    if isinstance(models, torch.Tensor):
        return models.float()
    return torch.stack([torch.as_tensor(m, dtype=torch.float32) for m in models])


def kernel_params(
    name: str, count: int, *, seed: int = 0, device: str | torch.device = "cpu", **params: Any
) -> dict[str, Any]:
    """The keyword arguments the engine gives method ``name``'s kernel for ``count`` models."""
    method = get_method(name)
    kwargs: dict[str, Any] = {}
    for param in method.params:
        value = params.pop(param.name, param.default)
        if param.scope is Scope.PER_MODEL:
            values = value if isinstance(value, (list, tuple)) else [value] * count
            checked = [param.check(v) for v in values]
            kwargs[param.name] = torch.tensor(checked, dtype=torch.float32, device=device)
        else:
            kwargs[param.name] = param.check(value)
    for statistic in method.statistics:
        value = params.pop(statistic.name, None)
        kwargs[statistic.name] = None if value is None else as_stack(value).to(device)
    assert not params, f"unknown parameters for {name}: {sorted(params)}"
    if method.random:
        kwargs["seed"] = seed
    return kwargs


def run(
    name: str,
    models: torch.Tensor | Sequence[Sequence[float]] | Sequence[torch.Tensor],
    base: torch.Tensor | Sequence[float] | None = None,
    *,
    seed: int = 0,
    **params: Any,
) -> torch.Tensor:
    """Merge ``models`` with method ``name``; unspecified parameters take their defaults."""
    tensors = as_stack(models)
    base_tensor = None if base is None else torch.as_tensor(base, dtype=torch.float32)
    kwargs = kernel_params(name, tensors.shape[0], seed=seed, device=tensors.device, **params)
    return get_method(name).kernel(tensors, base_tensor, **kwargs)


def draws(seed: int, shape: Sequence[int], count: int) -> list[torch.Tensor]:
    """The uniform numbers a random kernel draws for each of ``count`` models: model ``i``
    draws float32 numbers in flat order from numpy's PCG64 seeded with
    ``(seed + (i + 1) * 0x9E3779B97F4A7C15) mod 2**63``."""
    numel = int(np.prod(shape))
    out = []
    for i in range(count):
        generator = np.random.Generator(
            np.random.PCG64((seed + (i + 1) * 0x9E3779B97F4A7C15) % 2**63)
        )
        out.append(
            torch.from_numpy(generator.random(numel, dtype=np.float32)).reshape(tuple(shape))
        )
    return out


def f32(x: float) -> float:
    """``x`` rounded to float32, as per-model parameters reach kernels."""
    return torch.tensor(x, dtype=torch.float32).item()
