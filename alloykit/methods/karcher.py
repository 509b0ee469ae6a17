"""The Karcher (Fréchet) mean of the models' directions on the unit sphere.

Riemannian Center of Mass and Mollifier Smoothing, Karcher 1977 (Comm. Pure Appl. Math.,
doi:10.1002/cpa.3160300502; no arXiv): the point on the sphere minimising the weighted sum of
squared geodesic distances to the inputs, found by Riemannian gradient steps (log map, average,
exp map). The merged tensor is that direction times the weighted mean of the inputs' norms.
"""

from __future__ import annotations

import torch

from alloykit.methods.registry import register


def karcher_mean(
    vectors: torch.Tensor, weights: torch.Tensor, *, max_iter: int, tol: float
) -> torch.Tensor:
    """Weighted Karcher mean of the directions of flat ``vectors`` ``[n, d]``, scaled by the
    weighted mean norm. ``weights`` must sum to one.

    Vectors with norm ``<= tol`` carry no direction and are left out of the mean (the other
    weights are renormalised) but still count in the norm. Iteration starts from the
    normalized weighted average of the directions and stops after ``max_iter`` steps or when
    the step is shorter than ``tol``.
    """
    norms = torch.linalg.vector_norm(vectors, dim=-1)
    scale = (weights * norms).sum()
    valid = (norms > tol).tolist()
    if not any(valid):
        return torch.zeros_like(vectors[0])
    keep = torch.tensor(valid, device=vectors.device)
    alphas = torch.where(keep, weights, 0.0) / weights[keep].sum()
    inverse_norms = torch.where(keep, 1 / norms.clamp(min=tol), 0.0)

    def combine(coefficients: torch.Tensor) -> torch.Tensor:
        """``sum_i coefficients_i * unit_i`` without materialising the unit vectors."""
        return (coefficients * inverse_norms) @ vectors

    mean = combine(alphas)
    mean_norm = torch.linalg.vector_norm(mean)
    if mean_norm < tol:
        first = valid.index(True)
        mean = vectors[first] / norms[first]
    else:
        mean = mean / mean_norm
    for _ in range(max_iter):
        cos = ((vectors @ mean) * inverse_norms).clamp(-1.0, 1.0)
        theta = torch.arccos(cos)
        moving = keep & (theta >= tol)
        factor = torch.where(moving, alphas * theta / torch.sin(theta.clamp(min=tol)), 0.0)
        step = combine(factor) - (factor * cos).sum() * mean
        step_norm = torch.linalg.vector_norm(step)
        if step_norm < tol:
            break
        mean = torch.cos(step_norm) * mean + torch.sin(step_norm) * (step / step_norm)
        mean_norm = torch.linalg.vector_norm(mean)
        if mean_norm > tol:
            mean = mean / mean_norm
    return scale * mean


@register("karcher")
def karcher(
    tensors: torch.Tensor,
    base: torch.Tensor | None,
    *,
    weight: torch.Tensor,
    max_iter: int,
    tol: float,
) -> torch.Tensor:
    if tensors.shape[0] == 1:
        return tensors[0]
    total = weight.sum()
    if total <= 0:
        raise ValueError("karcher: the weights must have a positive sum")
    vectors = tensors.reshape(tensors.shape[0], -1)
    return karcher_mean(vectors, weight / total, max_iter=max_iter, tol=tol).reshape(
        tensors.shape[1:]
    )
