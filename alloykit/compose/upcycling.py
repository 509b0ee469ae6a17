"""Changes to an expert's copy of a dense MLP: Drop-Upcycling re-initialisation, noise, scale.

Drop-Upcycling (Nakamura et al., "Drop-Upcycling: Training Sparse Mixture of Experts with
Partial Re-initialization", arXiv:2502.19261): each expert picks a random ``ratio`` share of
the MLP's intermediate neurons and draws their weights afresh: rows of the gate and up
projections, columns of the down projection, each from a normal distribution with the mean
and standard deviation of that whole original matrix. The rest keeps the dense weights, so
experts start from the dense model's knowledge yet differ from one another.

Every draw comes from a generator seeded by (recipe seed, expert, layer) for the choice of
neurons, shared by the three projections of one expert's layer, and by (recipe seed, expert,
tensor) for the new values: the same output for any thread count or order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from alloykit.arch.layers import parse_layer_name
from alloykit.plan import tensor_seed

ROW_PROJECTIONS = ("gate_proj", "up_proj")  # [intermediate, hidden]: neurons are rows
COLUMN_PROJECTIONS = ("down_proj",)  # [hidden, intermediate]: neurons are columns


def neuron_subset(size: int, ratio: float, generator: torch.Generator) -> torch.Tensor:
    """``floor(ratio * size)`` distinct neuron indices, sorted."""
    count = int(ratio * size)
    return torch.randperm(size, generator=generator)[:count].sort().values


def reinitialise(
    weight: torch.Tensor, neurons: torch.Tensor, dim: int, generator: torch.Generator
) -> torch.Tensor:
    """``weight`` (float32) with the slices ``neurons`` along ``dim`` drawn from N(mean, std²)
    of the whole original matrix."""
    result = weight.float().clone()
    if len(neurons) == 0:
        return result
    mean, std = result.mean(), result.std()
    shape = list(result.shape)
    shape[dim] = len(neurons)
    fresh = torch.randn(shape, generator=generator) * std + mean
    return result.index_copy_(dim, neurons, fresh)


@dataclass(frozen=True)
class ExpertTransform:
    """What one expert does to its copy of a dense MLP tensor before it is written."""

    expert: str  # e.g. "experts[3]": part of every seed
    seed: int
    reinit_ratio: float = 0.0
    noise_scale: float = 0.0
    residual_scale: float = 1.0  # multiplies the down projection (the expert's output)

    @property
    def changes_weights(self) -> bool:
        return self.reinit_ratio > 0 or self.noise_scale > 0 or self.residual_scale != 1.0

    def describe(self) -> str:
        changes = []
        if self.reinit_ratio > 0:
            changes.append(f"reinit_ratio {self.reinit_ratio:g}")
        if self.noise_scale > 0:
            changes.append(f"noise_scale {self.noise_scale:g}")
        if self.residual_scale != 1.0:
            changes.append(f"residual_scale {self.residual_scale:g}")
        return ", ".join(changes)

    def __call__(self, name: str, weight: torch.Tensor) -> torch.Tensor:
        result = weight.float()
        projection = _projection(name)
        if self.reinit_ratio > 0 and projection is not None:
            dim = 0 if projection in ROW_PROJECTIONS else 1
            layer = parse_layer_name(name)
            where = f"{self.expert}/layer{layer.index if layer else -1}/neurons"
            neurons = neuron_subset(result.shape[dim], self.reinit_ratio, self._generator(where))
            result = reinitialise(result, neurons, dim, self._generator(f"{self.expert}/{name}"))
        if self.noise_scale > 0:
            noise = self._generator(f"{self.expert}/{name}/noise")
            result = result + torch.randn(result.shape, generator=noise) * self.noise_scale
        if self.residual_scale != 1.0 and projection in COLUMN_PROJECTIONS:
            result = result * self.residual_scale
        return result

    def _generator(self, key: str) -> torch.Generator:
        return torch.Generator().manual_seed(tensor_seed(self.seed, key))


def _projection(name: str) -> str | None:
    for projection in (*ROW_PROJECTIONS, *COLUMN_PROJECTIONS):
        if name.endswith(f"{projection}.weight"):
            return projection
    return None
