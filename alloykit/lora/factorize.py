"""Low-rank factorisation of one weight delta by truncated SVD.

The best rank-r approximation in Frobenius norm keeps the r largest singular triplets
(Eckart–Young), so its squared error is exactly the energy of the discarded singular values.
Singular values are split symmetrically between the factors, ``A = sqrt(S) Vᵀ`` and
``B = U sqrt(S)``, so that ``B @ A`` is the approximation with no scale left over (the adapter
then uses ``lora_alpha = r``: PEFT's scale ``alpha / r`` is 1) and neither factor dwarfs the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import torch

from alloykit.errors import AlloyError


class SvdMethod(str, Enum):
    """Exact SVD (``torch.linalg.svd``) or randomized (``torch.svd_lowrank``, Halko et al. 2009)."""

    EXACT = "exact"
    RANDOMIZED = "randomized"


@dataclass(frozen=True)
class RankRule:
    """How many singular values to keep: a fixed ``rank``, or the fewest keeping ``energy``.

    ``max_rank`` caps the energy rule (and is the sketch size of randomized SVD).
    """

    rank: int | None = None
    energy: float | None = None
    max_rank: int | None = None
    svd: SvdMethod = SvdMethod.EXACT

    def __post_init__(self) -> None:
        if (self.rank is None) == (self.energy is None):
            raise AlloyError("give exactly one of --rank or --energy", "e.g. --rank 16")
        if self.rank is not None and self.rank < 1:
            raise AlloyError(f"--rank must be at least 1, got {self.rank}")
        if self.energy is not None and not 0 < self.energy <= 1:
            raise AlloyError(
                f"--energy must be in (0, 1], got {self.energy:g}", "e.g. --energy 0.9"
            )
        if self.max_rank is not None and self.max_rank < 1:
            raise AlloyError(f"--max-rank must be at least 1, got {self.max_rank}")
        if self.energy is not None and self.svd is SvdMethod.RANDOMIZED and not self.max_rank:
            raise AlloyError(
                "--energy with --svd randomized needs --max-rank",
                "randomized SVD only sees the top --max-rank singular values",
            )

    def check_fits(self, module: str, rows: int, cols: int) -> None:
        """A fixed rank larger than the matrix is a mistake, not something to clamp silently."""
        if self.rank is not None and self.rank > min(rows, cols):
            raise AlloyError(
                f"--rank {self.rank} is larger than module {module!r} ({rows}×{cols}, "
                f"rank at most {min(rows, cols)})",
                "use a smaller --rank, --energy, or --exclude this module",
            )


@dataclass(frozen=True)
class LowRank:
    """``b @ a`` approximates a matrix; ``energy`` is the share of ‖M‖²_F it keeps."""

    a: torch.Tensor  # [rank, cols]
    b: torch.Tensor  # [rows, rank]
    energy: float
    relative_error: float  # ‖M − b a‖_F / ‖M‖_F

    @property
    def rank(self) -> int:
        return self.a.shape[0]


def keep_count(squares: torch.Tensor, total: float, energy: float) -> int:
    """The fewest leading singular values whose squares hold ``energy`` of ``total``."""
    kept = torch.cumsum(squares.double(), 0)
    reached = torch.nonzero(kept >= energy * total * (1 - 1e-12))
    return int(reached[0]) + 1 if len(reached) else len(squares)


def factorize(matrix: torch.Tensor, rule: RankRule, *, generator_seed: int = 0) -> LowRank:
    """Truncated SVD of ``matrix`` (computed in float32 on its device) as symmetric factors."""
    m = matrix.float()
    total = float(m.double().square().sum())
    limit = min(m.shape)
    if rule.svd is SvdMethod.EXACT:
        u, s, vh = torch.linalg.svd(m, full_matrices=False)
    else:
        sketch = min(limit, rule.rank or rule.max_rank or limit)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(generator_seed)
            u, s, v = torch.svd_lowrank(m, q=min(limit, sketch + 8), niter=4)
        vh = v.T
    if rule.rank is not None:
        rank = rule.rank
    else:
        assert rule.energy is not None
        rank = keep_count(s.square(), total, rule.energy) if total > 0 else 1
        if rule.max_rank is not None:
            rank = min(rank, rule.max_rank)
    rank = max(1, min(rank, len(s)))
    root = s[:rank].sqrt()
    a = root[:, None] * vh[:rank]
    b = u[:, :rank] * root[None, :]
    residual = float((m - b @ a).double().square().sum())
    kept = float(s[:rank].double().square().sum())
    return LowRank(
        a=a,
        b=b,
        energy=min(1.0, kept / total) if total > 0 else 1.0,
        relative_error=(residual / total) ** 0.5 if total > 0 else 0.0,
    )
