"""Scalar coefficients that a merge derives from its parameters and whole-tensor sums, shared
by a method's torch form and its fused form on stored bytes (:mod:`alloykit.methods.stored`),
so that both divide and interpolate by the very same float."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

from alloykit import native
from alloykit.methods.step_choices import SignRule


def weight_divisor(weights: Sequence[float], normalize: bool) -> float:
    """What a normalized weighted sum divides by: the weights' float32 sum in model order, or
    1 without ``normalize`` or where that sum is ~0 (|sum| <= 1e-8)."""
    if not normalize:
        return 1.0
    total = np.float32(0)
    for weight in np.asarray(weights, dtype=np.float32):
        total = np.float32(total + weight)
    return float(total) if abs(float(total)) > 1e-8 else 1.0


def stock_ratio(sums: Sequence[float], k: int) -> float:
    """Model Stock's ``t = k·cosθ / (1 + (k − 1)·cosθ)`` from the task vectors' squared norms
    ``sums[:k]`` and pair products ``sums[k:]`` (:func:`itertools.combinations` order), with
    cosθ their mean pairwise cosine; 0 (keep the base) where the denominator is ~0."""
    norms = [math.sqrt(s) for s in sums[:k]]
    cosines = [
        min(1.0, max(-1.0, sums[k + p] / max(norms[i] * norms[j], 1e-6)))
        for p, (i, j) in enumerate(itertools.combinations(range(k), 2))
    ]
    cos = sum(cosines) / len(cosines)
    denominator = 1 + (k - 1) * cos
    return 0.0 if abs(denominator) < 1e-6 else k * cos / denominator


def sign_vote(rule: SignRule | None) -> native.SignVote:
    """The fused kernels' code for a sign rule (``None``: no sign election)."""
    return _SIGN_VOTES[rule]


_SIGN_VOTES = {
    None: native.SignVote.NONE,
    SignRule.TOTAL: native.SignVote.TOTAL,
    SignRule.FREQUENCY: native.SignVote.FREQUENCY,
}
