"""Shared steps of task-vector merging: sparsify, rescale, elect signs, combine.

Task arithmetic, TIES, DARE, Model Breadcrumbs and DELLA differ only in which of these small
pure functions they compose (see :mod:`alloykit.methods.task_vectors`), so each step is written
once. Magnitude thresholds use partial selection (``kthvalue`` / ``topk``), never a full sort,
and break ties between equal magnitudes by position so that a mask is the same on every device.
"""

from __future__ import annotations

import struct
from enum import Enum

import torch

L1_EPS = 1e-7
"""Below this L1 norm a task vector is left unscaled (mergekit's tolerance)."""


class Sparsification(str, Enum):
    """How a task vector is thinned before merging."""

    MAGNITUDE = "magnitude"
    RANDOM = "random"
    BREADCRUMBS = "breadcrumbs"
    DELLA = "della"


class SignRule(str, Enum):
    """How TIES elects the sign of each parameter."""

    TOTAL = "total"
    FREQUENCY = "frequency"


SIGN_RULE_ALIASES: dict[str, SignRule] = {
    "total": SignRule.TOTAL,
    "frequency": SignRule.FREQUENCY,
    "sum": SignRule.TOTAL,
    "count": SignRule.FREQUENCY,
}
"""Accepted spellings: ours and mergekit's (``sum`` / ``count``)."""


class RescaleMode(str, Enum):
    """How the surviving entries of a sparsified task vector are scaled back up."""

    KEEP_RATE = "keep_rate"
    L1 = "l1"


def as_decimal(value: float) -> float:
    """The shortest decimal that rounds to the same float32 as ``value``.

    Per-model parameters reach kernels as float32, so a recipe's ``density: 0.7`` arrives as
    0.699999988. Counts such as ``int(density * numel)`` must use the value the user wrote.
    """
    single = struct.unpack("f", struct.pack("f", value))[0]
    for digits in range(1, 10):
        candidate = float(f"{single:.{digits}g}")
        if struct.unpack("f", struct.pack("f", candidate))[0] == single:
            return candidate
    return single


def per_model(values: torch.Tensor) -> list[float]:
    """A per-model parameter ``[n]`` as Python decimals (see :func:`as_decimal`)."""
    return [as_decimal(v) for v in values.tolist()]


def kth_largest(values: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k``-th largest entry of a 1-D tensor, by partial selection.

    On CPU ``kthvalue`` is fastest; on CUDA it runs a single slice on one block (over 100 ms
    for 16M entries) while ``topk`` takes under a millisecond, so that is used instead.
    """
    n = values.numel()
    if values.device.type == "cpu":
        return values.kthvalue(n - k + 1).values
    if k <= n - k + 1:
        return values.topk(k, sorted=False).values.min()
    return values.topk(n - k + 1, largest=False, sorted=False).values.max()


def top_k_mask(values: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of the ``k`` largest entries of a 1-D tensor.

    The threshold comes from partial selection (see :func:`kth_largest`). Among entries equal
    to it, the ones at the lowest positions are kept, so exactly ``k`` entries are selected on
    any device and ``top_k_mask(v, a)`` is contained in ``top_k_mask(v, b)`` whenever
    ``a <= b``.
    """
    n = values.numel()
    if k <= 0:
        return torch.zeros_like(values, dtype=torch.bool)
    if k >= n:
        return torch.ones_like(values, dtype=torch.bool)
    threshold = kth_largest(values, k)
    keep = values > threshold
    at_threshold = values == threshold
    room = k - int(keep.sum())
    if int(at_threshold.sum()) == room:
        return keep | at_threshold
    keep[at_threshold.nonzero().squeeze(1)[:room]] = True
    return keep


def magnitude_mask(delta: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the ``density`` fraction of entries with the largest magnitude (at least one).

    The trim step of TIES-Merging: Resolving Interference When Merging Models, Yadav et al.
    2023, arXiv:2306.01708.
    """
    k = max(1, int(density * delta.numel()))
    return top_k_mask(delta.abs().reshape(-1), k).reshape(delta.shape)


def breadcrumbs_mask(delta: torch.Tensor, density: float, gamma: float) -> torch.Tensor:
    """Drop the ``gamma`` fraction of largest-magnitude outliers, keep the next ``density``.

    Model Breadcrumbs: Scaling Multi-Task Model Merging with Sparse Masks, Davari & Belilovsky
    2023, arXiv:2312.06795. When ``density + gamma > 1`` fewer outliers are dropped so that
    ``int(density * numel)`` entries are still kept.
    """
    n = delta.numel()
    keep = int(density * n)
    top = min(int(gamma * n), n - keep)
    magnitude = delta.abs().reshape(-1)
    window = top_k_mask(magnitude, top + keep) & ~top_k_mask(magnitude, top)
    return window.reshape(delta.shape)


def uniform_draws(like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Uniform [0, 1) numbers shaped like ``like``, drawn on CPU then moved to its device.

    Drawing on CPU from the engine's per-tensor generator makes random masks identical on
    every device and thread count.
    """
    return torch.rand(like.shape, generator=generator).to(like.device)


def della_keep_probability(delta: torch.Tensor, density: float, epsilon: float) -> torch.Tensor:
    """Per-entry keep probabilities rising linearly with magnitude rank within each row.

    MagPrune from DELLA-Merging: Reducing Interference in Model Merging through Magnitude-Based
    Sampling, Deep et al. 2024, arXiv:2406.11617. A row is a vector along the last dimension;
    within it the smallest magnitude is kept with probability ``density - epsilon`` and the
    largest with ``density + epsilon`` (equal magnitudes are ranked by position). A row of one
    entry is kept with probability ``density``.
    """
    if density - epsilon <= 0 or density + epsilon >= 1:
        raise ValueError(
            f"della needs 0 < density - epsilon and density + epsilon < 1; "
            f"got density={density:g}, epsilon={epsilon:g}"
        )
    width = delta.shape[-1] if delta.dim() else 1
    if width == 1:
        return torch.full_like(delta, density)
    rows = delta.abs().reshape(-1, width)
    order = rows.argsort(dim=-1, stable=True)
    positions = torch.arange(width, device=delta.device).expand_as(order)
    ranks = torch.empty_like(order).scatter_(-1, order, positions)
    relative = ranks.to(delta.dtype) / (width - 1)
    return (relative * (2 * epsilon) + (density - epsilon)).reshape(delta.shape)


def rescale(
    delta: torch.Tensor,
    kept: torch.Tensor,
    keep_probability: float | torch.Tensor,
    mode: RescaleMode,
) -> torch.Tensor:
    """Scale the surviving entries ``kept`` of ``delta`` back up.

    ``keep_rate`` divides each entry by the probability it was kept with, which preserves the
    expected task vector (DARE, arXiv:2311.03099; DELLA, arXiv:2406.11617). ``l1`` scales the
    whole tensor so its L1 norm equals that of ``delta`` (mergekit 0.1.5's ``rescale``); tensors
    with an L1 norm below ``L1_EPS`` before or after pruning are left as they are.
    """
    if mode is RescaleMode.KEEP_RATE:
        return kept / keep_probability
    before = delta.abs().sum()
    after = kept.abs().sum()
    usable = (before >= L1_EPS) & (after >= L1_EPS)
    return kept * torch.where(usable, before / after.clamp(min=L1_EPS), 1.0)


def sparsify(
    delta: torch.Tensor,
    method: Sparsification,
    *,
    density: float,
    gamma: float = 0.0,
    epsilon: float = 0.0,
    rescale_mode: RescaleMode | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Thin one task vector with ``method``, optionally rescaling the survivors.

    ``density >= 1`` returns ``delta`` untouched and ``density <= 0`` returns zeros, without
    drawing random numbers. Random methods draw one uniform number per entry of ``delta``.
    """
    if density >= 1 or delta.numel() == 0:
        return delta
    if density <= 0:
        return torch.zeros_like(delta)
    keep_probability: float | torch.Tensor = density
    if method is Sparsification.MAGNITUDE:
        keep = magnitude_mask(delta, density)
    elif method is Sparsification.BREADCRUMBS:
        keep = breadcrumbs_mask(delta, density, gamma)
    else:
        if generator is None:
            raise ValueError(f"{method.value} sparsification needs a random generator")
        if method is Sparsification.DELLA:
            keep_probability = della_keep_probability(delta, density, epsilon)
        keep = uniform_draws(delta, generator) < keep_probability
    kept = torch.where(keep, delta, 0.0)
    if rescale_mode is None:
        return kept
    return rescale(delta, kept, keep_probability, rescale_mode)


def sign_consensus(deltas: torch.Tensor, rule: SignRule) -> torch.Tensor:
    """Mask ``[n, ...]`` of the entries whose sign agrees with the elected sign.

    TIES-Merging (Yadav et al. 2023, arXiv:2306.01708) elects, per parameter, the sign with the
    larger total mass (``total``: sign of the sum); ``frequency`` elects the sign held by more
    models. A tie elects ``+``. Zero entries never agree, so they do not count in a mean.
    """
    signs = deltas.sign()
    votes = deltas.sum(0) if rule is SignRule.TOTAL else signs.sum(0)
    elected = torch.where(votes >= 0, 1.0, -1.0)
    return signs == elected


def disjoint_sum(
    weighted: torch.Tensor, weights: torch.Tensor, agree: torch.Tensor, normalize: bool
) -> torch.Tensor:
    """Sum the agreeing entries of weighted task vectors; with ``normalize``, their mean.

    The disjoint merge of TIES-Merging (arXiv:2306.01708): each parameter is averaged only over
    the models that agree with its elected sign, weighted by the models' weights. Where no
    model agrees the divisor is taken as 1.
    """
    merged = torch.where(agree, weighted, 0.0).sum(0)
    if not normalize:
        return merged
    divisor = torch.tensordot(weights, agree.to(weighted.dtype), dims=1)
    return merged / torch.where(divisor == 0, 1.0, divisor)


def weighted_sum(weighted: torch.Tensor, weights: torch.Tensor, normalize: bool) -> torch.Tensor:
    """Sum weighted task vectors; with ``normalize``, divide by the weights' sum (if not ~0)."""
    merged = weighted.sum(0)
    if not normalize:
        return merged
    total = weights.sum()
    return merged / torch.where(total.abs() < 1e-8, 1.0, total)
