"""Model Stock: move from the base towards the average of the fine-tuned models by an amount
set by how much their updates agree.

Model Stock: All We Need Is Just a Few Fine-Tuned Models, Jang et al. 2024, arXiv:2403.19522.
With k fine-tuned models whose updates from the base meet at angle θ, the paper's optimal
interpolation ratio is ``t = k·cosθ / (1 + (k − 1)·cosθ)`` and the merged weight is
``t · mean(models) + (1 − t) · base``.
"""

from __future__ import annotations

import itertools

import torch

from alloykit.methods.registry import BasePolicy, Param, Scope, register


def pairwise_mean_cosine(offsets: torch.Tensor) -> torch.Tensor:
    """Mean cosine over all pairs of ``offsets`` ``[k, ..., d]``, along the last dimension."""
    norms = torch.linalg.vector_norm(offsets, dim=-1)
    cosines = [
        ((offsets[i] * offsets[j]).sum(-1) / (norms[i] * norms[j]).clamp(min=1e-6)).clamp(-1, 1)
        for i, j in itertools.combinations(range(offsets.shape[0]), 2)
    ]
    return torch.stack(cosines).mean(0)


@register(
    "model_stock",
    summary="Interpolate base → mean of models by a ratio set by the updates' mean cosine.",
    reference="Model Stock: All We Need Is Just a Few Fine-Tuned Models, Jang et al. 2024, "
    "arXiv:2403.19522",
    params=(
        Param(
            "filter_wise",
            bool,
            Scope.GLOBAL,
            False,
            doc="one ratio per row (vector along the last dimension) instead of per tensor",
        ),
    ),
    base=BasePolicy.REQUIRED,
    min_models=2,
    notes="Where 1 + (k − 1)·cosθ is ~0 (|x| < 1e-6) the base is kept (t = 0), as in mergekit.",
)
def model_stock(tensors: torch.Tensor, base: torch.Tensor, *, filter_wise: bool) -> torch.Tensor:
    k = tensors.shape[0]
    if filter_wise:
        rows = base.reshape(1, -1) if base.dim() < 2 else base
        models = tensors.reshape(k, *rows.shape)
    else:
        rows = base.reshape(-1)
        models = tensors.reshape(k, -1)
    cos = pairwise_mean_cosine(models - rows)[..., None]
    denominator = 1 + (k - 1) * cos
    singular = denominator.abs() < 1e-6
    t = torch.where(singular, 0.0, k * cos / torch.where(singular, 1.0, denominator))
    return (t * models.mean(0) + (1 - t) * rows).reshape(base.shape)
