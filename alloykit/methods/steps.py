"""Shared steps of task-vector merging: sparsify, rescale, elect signs, combine.

Task arithmetic, TIES, DARE, Model Breadcrumbs and DELLA differ only in which of these small
pure functions they compose (see :mod:`alloykit.methods.task_vectors`), so each step is written
once. Every step works on a chunk of rows at a time (see :mod:`alloykit.methods.streaming`):
magnitude cut-offs come from exact radix counting (:mod:`alloykit.methods.selection`), never a
sort, and break ties between equal magnitudes by position so a mask is the same on every device
and for every chunking.
"""

from __future__ import annotations

import threading

import numpy as np
import torch

from alloykit import native
from alloykit.methods.selection import TopK, ordered_bits
from alloykit.methods.step_choices import RescaleMode, SignRule, Sparsification
from alloykit.methods.thinning import (  # noqa: F401  (re-exported: the steps' one namespace)
    KEPT_BITS_BYTES,
    L1_EPS,
    Thinning,
    UniformDraws,
    as_decimal,
    check_della,
    l1_factor,
    model_seed,
    survivor_bytes,
)


def per_model(values: torch.Tensor) -> list[float]:
    """A per-model parameter ``[n]`` as Python decimals (see :func:`as_decimal`)."""
    return [as_decimal(v) for v in values.tolist()]


def della_keep_probability(delta: torch.Tensor, density: float, epsilon: float) -> torch.Tensor:
    """Per-entry keep probabilities rising linearly with magnitude rank within each row.

    MagPrune from DELLA-Merging: Reducing Interference in Model Merging through Magnitude-Based
    Sampling, Deep et al. 2024, arXiv:2406.11617. A row is a vector along the last dimension;
    within it the smallest magnitude is kept with probability ``density - epsilon`` and the
    largest with ``density + epsilon`` (equal magnitudes are ranked by position). A row of one
    entry is kept with probability ``density``.
    """
    check_della(density, epsilon)
    width = delta.shape[-1] if delta.dim() else 1
    if width == 1:
        return torch.full_like(delta, density)
    rows = delta.abs().reshape(-1, width)
    order = ordered_bits(rows).argsort(dim=-1, stable=True)
    positions = torch.arange(width, device=delta.device).expand_as(order)
    ranks = torch.empty_like(order).scatter_(-1, order, positions)
    relative = ranks.to(delta.dtype) / (width - 1)
    return (relative * (2 * epsilon) + (density - epsilon)).reshape(delta.shape)


class Sparsifier(Thinning):
    """Thins one model's task vector, fed in chunks in row order, and rescales the survivors.

    The state the fused kernels need (draws, survivor bits, L1 norms) is :class:`Thinning`'s;
    this adds magnitude and Breadcrumbs masks, which need the whole tensor's cut-offs
    (:class:`~alloykit.methods.selection.TopK`: :meth:`count` / :meth:`settle` passes), and
    the same thinning as torch operations on chunks (:meth:`apply`, :meth:`measure`).
    """

    def __init__(
        self,
        method: Sparsification,
        numel: int,
        dtype: torch.dtype,
        *,
        density: float,
        gamma: float = 0.0,
        epsilon: float = 0.0,
        rescale_mode: RescaleMode | None = None,
        seed: int = 0,
        record_survivors: bool = True,
    ) -> None:
        self.selection: TopK | None = None
        super().__init__(
            method, numel, density=density, epsilon=epsilon, rescale_mode=rescale_mode,
            seed=seed, record_survivors=record_survivors,
        )  # fmt: skip
        thinning = not (self.identity or self.zero)
        if thinning and method is Sparsification.MAGNITUDE:
            self.selection = TopK(numel, [max(1, int(density * numel))], dtype)
        elif thinning and method is Sparsification.BREADCRUMBS:
            keep = int(density * numel)
            top = min(int(gamma * numel), numel - keep)
            self.selection = TopK(numel, [top + keep, top], dtype)
        self.start_scan()

    @property
    def levels(self) -> int:
        return self.selection.levels if self.selection is not None else 0

    def count(self, delta: torch.Tensor) -> None:
        """Count a chunk's magnitudes (``delta`` may be overwritten)."""
        if self.selection is not None:
            self.selection.count(delta.abs_())

    def settle(self) -> None:
        if self.selection is not None:
            self.selection.settle()

    def start_scan(self) -> None:
        """Restart the draws and the hand-out of tied entries for another pass over the chunks."""
        super().start_scan()
        if self.selection is not None:
            self.selection.start_scan()

    def count_deltas(self, x: torch.Tensor, base: torch.Tensor) -> None:
        """:meth:`count` for the fused kernels: the task vector is ``x - base``."""
        if self.selection is not None:
            self.selection.count_deltas(x, base)

    def measuring_keep(
        self, x: torch.Tensor, base: torch.Tensor, slot: int = 0, offset: int = 0
    ) -> native.Keep:
        """The thinning of a measuring pass's chunk at flat index ``offset`` for the fused
        kernels (:func:`measure_deltas`); a random sparsifier also records its survivors."""
        return self.record(self.native_keep(x, base, 1.0, slot), offset, x.numel())

    def measured(self, keep: native.Keep, before: float, after: float) -> None:
        """Add a chunk's L1 norms before and after thinning, measured by the fused kernels."""
        self.native_done(keep)
        self.add_l1(before, after)

    def native_keep(
        self,
        x: torch.Tensor,
        base: torch.Tensor,
        weight: float,
        slot: int = 0,
        offset: int | None = None,
    ) -> native.Keep:
        """This chunk's thinning for the fused kernels (:meth:`Thinning.keep`, plus magnitude
        cut-offs, and DELLA's probabilities in the calling thread's scratch buffer ``slot``)."""
        if self.selection is None or self.identity or self.zero:
            if self.method is not Sparsification.DELLA or not self.random:
                return self.keep(weight, offset=offset)
            if offset is not None and self.kept_bits is not None:
                return self.keep(weight, offset=offset)  # read back: nothing to rank
            width = x.shape[-1] if x.dim() else 1
            if width == 1:
                return self.keep(weight, offset=offset)
            check_della(self.density, self.epsilon)
            probabilities = native.scratch.get(slot, x.numel())
            span, low = 2 * self.epsilon, self.density - self.epsilon
            native.della_probabilities(x, base, width, span, low, probabilities)
            return self.keep(weight, offset=offset, probabilities=probabilities.data_ptr())
        keep = self.keep(weight, by_magnitude=True)
        bands = 2 if self.method is Sparsification.BREADCRUMBS else 1
        keep.mode = native.KeepMode.BAND if bands == 2 else native.KeepMode.TOP
        for which in range(bands):
            keep.cut[which], all_equal, keep.left[which] = self.selection.native_cut(which)
            keep.all_equal[which] = int(all_equal)
        return keep

    def native_done(self, keep: native.Keep) -> None:
        """Take back the state a fused kernel advanced (hand-out of tied magnitudes)."""
        if self.selection is not None and keep.mode in (native.KeepMode.TOP, native.KeepMode.BAND):
            for which in range(2 if keep.mode == native.KeepMode.BAND else 1):
                self.selection.handed_out(which, keep.left[which])

    def measure(self, delta: torch.Tensor) -> None:
        """Add a chunk's L1 norms before and after thinning (for ``l1`` rescaling)."""
        keep, _ = self._keep(delta)
        assert isinstance(keep, torch.Tensor)  # only thinning sparsifiers measure
        # summed in float64, as the fused kernel sums: both paths then get the same float32
        # factor (a last-bit difference could flip a sign election that cancels exactly)
        before = torch.linalg.vector_norm(delta, 1, dtype=torch.float64)
        after = torch.linalg.vector_norm(keep.mul_(delta), 1, dtype=torch.float64)
        self.add_l1(float(before), float(after))

    def apply(self, delta: torch.Tensor) -> torch.Tensor:
        """Thin (and rescale) a chunk of the task vector, in place; returns ``delta``."""
        if self.identity:
            return delta
        keep, probability = self._keep(delta)
        delta.mul_(keep)
        if self.rescale_mode is RescaleMode.KEEP_RATE:
            delta.div_(probability)
        elif self.rescale_mode is RescaleMode.L1:
            delta.mul_(self.l1)
        return delta

    def _keep(self, delta: torch.Tensor) -> tuple[torch.Tensor | float, float | torch.Tensor]:
        """Which entries survive (1.0 / 0.0, or a constant) and their keep probability."""
        if self.identity:
            return 1.0, 1.0
        if self.zero:
            return 0.0, 0.0
        probability: float | torch.Tensor = self.density
        if self.selection is not None:
            magnitude = delta.abs()
            keep = self.selection.mask(magnitude, 0)
            if self.method is Sparsification.BREADCRUMBS:
                keep -= self.selection.mask(magnitude, 1)  # the outliers are within the top
            return keep, probability
        assert self.draws is not None
        if self.method is Sparsification.DELLA:
            probability = della_keep_probability(delta, self.density, self.epsilon)
        draws = _draws_like(self.draws, delta)
        # sign(p - u) is exact (a correctly rounded difference keeps its sign): 1 where u < p
        keep = draws.neg_().add_(probability).sign_().clamp_(min=0)
        return keep, probability


_draw_buffers = threading.local()  # one per thread, shared by all draws: no allocation churn


def _draws_like(draws: UniformDraws, like: torch.Tensor) -> torch.Tensor:
    """The next ``like.numel()`` numbers of ``draws`` shaped like ``like``, valid until the
    thread's next draw."""
    count = like.numel()
    buffer = getattr(_draw_buffers, "array", None)
    if buffer is None or buffer.size < count:
        buffer = _draw_buffers.array = np.empty(count, dtype=np.float32)
    numbers = draws.numbers(buffer[:count])
    return torch.from_numpy(numbers).reshape(like.shape).to(like.device)


def measure_deltas(
    sparsifiers: dict[int, Sparsifier], x: torch.Tensor, base: torch.Tensor, offset: int
) -> None:
    """A measuring pass's chunk for the fused kernels: the L1 norms of each ``x[m] - base``
    before and after ``sparsifiers[m]``'s thinning, all models in one kernel call (their
    generators draw side by side); ``offset`` is the chunk's flat index."""
    slots = list(sparsifiers)
    keeps = [sparsifiers[m].measuring_keep(x[m], base, m, offset) for m in slots]
    norms = native.l1_norms([x[m] for m in slots], base, keeps)
    for m, keep, (before, after) in zip(slots, keeps, norms, strict=True):
        sparsifiers[m].measured(keep, before, after)


def sparsify(
    delta: torch.Tensor,
    method: Sparsification,
    *,
    density: float,
    gamma: float = 0.0,
    epsilon: float = 0.0,
    rescale_mode: RescaleMode | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """Thin one whole task vector with ``method`` (see :class:`Sparsifier`)."""
    sparsifier = Sparsifier(
        method,
        delta.numel(),
        delta.dtype,
        density=density,
        gamma=gamma,
        epsilon=epsilon,
        rescale_mode=rescale_mode,
        seed=seed,
    )
    for _ in range(sparsifier.levels):
        sparsifier.count(delta.clone())
        sparsifier.settle()
    if sparsifier.needs_l1:
        sparsifier.start_scan()
        sparsifier.measure(delta)
        sparsifier.settle_l1()
    sparsifier.start_scan()
    return sparsifier.apply(delta.clone())


def sign_consensus(deltas: torch.Tensor, rule: SignRule) -> torch.Tensor:
    """Mask ``[n, ...]`` (1.0 or 0.0) of the entries whose sign agrees with the elected sign.

    Masks here are numbers, not booleans: on CPU arithmetic on them is several times faster
    than ``torch.where`` on a boolean mask, and exact.

    TIES-Merging (Yadav et al. 2023, arXiv:2306.01708) elects, per parameter, the sign with the
    larger total mass (``total``: sign of the sum); ``frequency`` elects the sign held by more
    models. A tie elects ``+``. Zero entries never agree, so they do not count in a mean.
    """
    signs = deltas.sign()
    votes = deltas.sum(0) if rule is SignRule.TOTAL else signs.sum(0)
    elected = votes.sign().add_(0.5).sign_()  # +1 where votes >= 0, else -1
    return signs.mul_(elected).clamp_(min=0)


def disjoint_sum(
    weighted: torch.Tensor, weights: torch.Tensor, agree: torch.Tensor, normalize: bool
) -> torch.Tensor:
    """Sum the agreeing entries of weighted task vectors; with ``normalize``, their mean.

    The disjoint merge of TIES-Merging (arXiv:2306.01708): each parameter is averaged only over
    the models that agree with its elected sign, weighted by the models' weights. Where no
    model agrees the divisor is taken as 1.
    """
    merged = (weighted * agree).sum(0)
    if not normalize:
        return merged
    divisor = torch.tensordot(weights.to(agree.dtype), agree, dims=1)
    return merged.div_(divisor.add_(1 - divisor.sign().abs_()))  # divisor 0 -> 1


def weighted_sum(weighted: torch.Tensor, weights: torch.Tensor, normalize: bool) -> torch.Tensor:
    """Sum weighted task vectors; with ``normalize``, divide by the weights' sum (if not ~0)."""
    merged = weighted.sum(0)
    if not normalize:
        return merged
    total = weights.sum()
    return merged / torch.where(total.abs() < 1e-8, 1.0, total)


def changed_entries(deltas: torch.Tensor, epsilon: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Which task-vector entries changed (``|delta| > epsilon``, per model) and how many
    models changed each entry (RAM's shared/unique split, arXiv:2601.13572)."""
    changed = deltas.abs() > epsilon
    return changed, changed.sum(dim=0, keepdim=True)


def shared_mean_unique_kept(
    deltas: torch.Tensor,
    changed: torch.Tensor,
    counts: torch.Tensor,
    unique_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sum over models of: entries only one model changed (times that model's
    ``unique_scale``, shape ``[n]``), plus the mean of each entry over the models that changed
    it, where several did. Unchanged entries (``|delta| <= epsilon``) count as zero."""
    kept = deltas * changed
    unique = kept * (counts == 1)
    if unique_scale is not None:
        unique = unique * unique_scale.reshape(-1, *([1] * (deltas.dim() - 1)))
    return (unique + kept * (counts > 1) / counts.clamp(min=1)).sum(dim=0)
