"""Call registered kernels the way the engine does: defaults filled, per-model values as
float32 ``[n]`` tensors, random kernels given a CPU generator seeded with ``seed``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from alloykit.methods import Scope, get_method


def as_stack(
    models: torch.Tensor | Sequence[Sequence[float]] | Sequence[torch.Tensor],
) -> torch.Tensor:
    if isinstance(models, torch.Tensor):
        return models.float()
    return torch.stack([torch.as_tensor(m, dtype=torch.float32) for m in models])


def run(
    name: str,
    models: torch.Tensor | Sequence[Sequence[float]] | Sequence[torch.Tensor],
    base: torch.Tensor | Sequence[float] | None = None,
    *,
    seed: int = 0,
    **params: Any,
) -> torch.Tensor:
    """Merge ``models`` with method ``name``; unspecified parameters take their defaults."""
    method = get_method(name)
    tensors = as_stack(models)
    base_tensor = None if base is None else torch.as_tensor(base, dtype=torch.float32)
    kwargs: dict[str, Any] = {}
    for param in method.params:
        value = params.pop(param.name, param.default)
        if param.scope is Scope.PER_MODEL:
            values = value if isinstance(value, (list, tuple)) else [value] * tensors.shape[0]
            checked = [param.check(v) for v in values]
            kwargs[param.name] = torch.tensor(checked, dtype=torch.float32, device=tensors.device)
        else:
            kwargs[param.name] = param.check(value)
    assert not params, f"unknown parameters for {name}: {sorted(params)}"
    if method.random:
        kwargs["generator"] = torch.Generator().manual_seed(seed)
    return method.kernel(tensors, base_tensor, **kwargs)


def draws(seed: int, shape: Sequence[int], count: int) -> list[torch.Tensor]:
    """The uniform numbers a random kernel draws for ``count`` sparsified models, in order."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(tuple(shape), generator=generator) for _ in range(count)]


def f32(x: float) -> float:
    """``x`` rounded to float32, as per-model parameters reach kernels."""
    return torch.tensor(x, dtype=torch.float32).item()
