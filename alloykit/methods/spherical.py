"""Interpolation along great circles: slerp, nuslerp and multislerp.

Linear averaging of two weight vectors shrinks the result when they point in different
directions; interpolating along the arc between their directions does not. Spherical linear
interpolation is from Animating Rotation with Quaternion Curves, Shoemake 1985 (SIGGRAPH,
doi:10.1145/325165.325242; no arXiv). Kernels compute without host synchronisation except
where a method must branch on a whole-tensor quantity (multislerp's degenerate mean).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from alloykit.methods.registry import register, register_streaming
from alloykit.methods.streaming import Chunk, Observer, StreamingMerge

COLINEAR_DOT = 0.9995
"""Above this |cos| between the two directions, slerp falls back to linear interpolation."""
NORM_EPS = 1e-8


def slerp_coefficients(
    t: float, norm_a: torch.Tensor, norm_b: torch.Tensor, dot_ab: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Coefficients ``(c_a, c_b)`` with ``slerp(a, b) = c_a * a + c_b * b``.

    The angle is between the normalized vectors, from their norms and dot product; the
    coefficients apply to the unnormalized vectors, so the result's norm moves smoothly between
    theirs. Nearly colinear or antipodal pairs (``|cos| > 0.9995``) interpolate linearly; a zero
    vector counts as orthogonal.
    """
    scale_a = torch.where(norm_a > NORM_EPS, norm_a, 1.0)
    scale_b = torch.where(norm_b > NORM_EPS, norm_b, 1.0)
    dot = (dot_ab / (scale_a * scale_b)).clamp(-1.0, 1.0)
    linear = dot.abs() > COLINEAR_DOT
    theta = torch.acos(torch.where(linear, 0.5, dot))
    sin_theta = torch.sin(theta)
    coef_a = torch.where(linear, 1 - t, torch.sin((1 - t) * theta) / sin_theta)
    coef_b = torch.where(linear, t, torch.sin(t * theta) / sin_theta)
    return coef_a, coef_b


class SlerpMerge(StreamingMerge):
    """Slerp from the base to the other model, each whole tensor one flat vector: a pass sums
    the squared norms and the dot product over the chunks, then every chunk is combined."""

    def __init__(self, shape: tuple[int, ...], dtype: torch.dtype, *, t: float) -> None:
        self.t = t
        self.coefficients: tuple[torch.Tensor, torch.Tensor] | None = None
        self.scaled_base: torch.Tensor | None = None  # c_a * base, one buffer for every chunk

    def passes(self) -> Iterator[Observer]:
        sums: list[torch.Tensor] = []  # one running total

        def observe(chunk: Chunk) -> None:
            assert chunk.base is not None
            a, b = chunk.base.reshape(-1), chunk.tensors[0].reshape(-1)
            part = torch.stack([a.dot(a), b.dot(b), a.dot(b)])
            if sums:
                sums[0].add_(part)
            else:
                sums.append(part)

        yield observe
        aa, bb, ab = sums[0]
        self.coefficients = slerp_coefficients(self.t, aa.sqrt(), bb.sqrt(), ab)

    def merge(self, chunk: Chunk) -> torch.Tensor:
        """``c_a * base + c_b * other`` computed in memory that is already there: the sink's
        rows, or the other model's rows (the chunk's own) with one buffer kept for the whole
        tensor. Temporaries made and freed per chunk in worker threads were handed back to the
        system by glibc and faulted in again at every chunk."""
        assert self.coefficients is not None and chunk.base is not None
        assert not chunk.read_only
        coef_a, coef_b = self.coefficients
        scaled_other = chunk.tensors[0].mul_(coef_b)
        if chunk.out is not None:
            return torch.mul(chunk.base, coef_a, out=chunk.out).add_(scaled_other)
        scaled_base = torch.mul(chunk.base, coef_a, out=self._scaled_base_buffer(chunk.base))
        return scaled_other.add_(scaled_base)

    def _scaled_base_buffer(self, base: torch.Tensor) -> torch.Tensor:
        """A tensor shaped like ``base`` in the buffer kept from chunk to chunk (the first
        chunk is the largest)."""
        numel = base.numel()
        if self.scaled_base is None or self.scaled_base.numel() < numel:
            self.scaled_base = torch.empty(numel, dtype=base.dtype, device=base.device)
        return self.scaled_base[:numel].view(base.shape)


register_streaming("slerp", SlerpMerge)


def _unit_rows(x: torch.Tensor) -> torch.Tensor:
    return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp(min=1e-7)


def nuslerp_vectors(
    t: float, v0: torch.Tensor, v1: torch.Tensor, *, flatten: bool, row_wise: bool
) -> torch.Tensor:
    """Slerp ``v0`` towards ``v1`` by ``t``, vector by vector.

    With ``flatten`` each tensor is one vector; otherwise vectors run along the last dimension,
    or along the first with ``row_wise`` (mergekit's naming, kept for compatibility). Exactly
    colinear vectors interpolate linearly.
    """
    shape = v0.shape
    if flatten:
        v0, v1 = v0.reshape(-1), v1.reshape(-1)
    elif row_wise:
        v0, v1 = v0.transpose(0, -1), v1.transpose(0, -1)
    cos = (_unit_rows(v0) * _unit_rows(v1)).sum(-1, keepdim=True).clamp(-1.0, 1.0)
    colinear = 1 - cos.square() <= NORM_EPS**2
    theta = torch.acos(torch.where(colinear, 0.5, cos))
    sin_theta = torch.sin(theta)
    arc = (torch.sin((1 - t) * theta) * v0 + torch.sin(t * theta) * v1) / sin_theta
    merged = torch.where(colinear, (1 - t) * v0 + t * v1, arc)
    if row_wise and not flatten:
        merged = merged.transpose(0, -1)
    return merged.reshape(shape)


@register("nuslerp")
def nuslerp(
    tensors: torch.Tensor,
    base: torch.Tensor | None,
    *,
    weight: torch.Tensor,
    nuslerp_flatten: bool,
    nuslerp_row_wise: bool,
) -> torch.Tensor:
    w0, w1 = weight.tolist()
    total = w0 + w1
    t = 0.5 if abs(total) < 1e-6 else w1 / total
    origin = 0.0 if base is None else base
    merged = nuslerp_vectors(
        t,
        tensors[0] - origin,
        tensors[1] - origin,
        flatten=nuslerp_flatten,
        row_wise=nuslerp_row_wise,
    )
    return merged + origin


@register("multislerp")
def multislerp(
    tensors: torch.Tensor,
    base: torch.Tensor | None,
    *,
    weight: torch.Tensor,
    normalize_weights: bool,
    eps: float,
) -> torch.Tensor:
    """Project directions onto the tangent plane at their weighted mean direction, average
    there, map back with the exponential map and give the result the mean norm."""
    if tensors.shape[0] == 1:
        return tensors[0]
    origin = 0.0 if base is None else base
    vectors = (tensors - origin).reshape(tensors.shape[0], -1)
    weights = weight / weight.sum() if normalize_weights else weight
    norms = torch.linalg.vector_norm(vectors, dim=-1, keepdim=True)
    units = vectors / (norms + eps)
    mean = (units * weights[:, None]).sum(0)
    mean_norm = torch.linalg.vector_norm(mean)
    if mean_norm < eps:
        if tensors.shape[0] != 2:
            raise ValueError(
                "multislerp: the weighted mean direction is zero (antipodal inputs whose "
                "weights cancel); change the weights"
            )
        merged = weights[0] * vectors[0] + weights[1] * vectors[1]
        return merged.reshape(tensors.shape[1:]) + origin
    mean = mean / mean_norm
    tangents = units - (units @ mean)[:, None] * mean
    step = (tangents * weights[:, None]).sum(0)
    step_norm = torch.linalg.vector_norm(step) + eps
    direction = mean * torch.cos(step_norm) + step * (torch.sin(step_norm) / step_norm)
    merged = direction * (norms[:, 0] * weights).sum()
    return merged.reshape(tensors.shape[1:]) + origin
