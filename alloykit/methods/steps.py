"""Shared steps of task-vector merging: sparsify, rescale, elect signs, combine.

Task arithmetic, TIES, DARE, Model Breadcrumbs and DELLA differ only in which of these small
pure functions they compose (see :mod:`alloykit.methods.task_vectors`), so each step is written
once. Every step works on a chunk of rows at a time (see :mod:`alloykit.methods.streaming`):
magnitude cut-offs come from exact radix counting (:mod:`alloykit.methods.selection`), never a
sort, and break ties between equal magnitudes by position so a mask is the same on every device
and for every chunking.
"""

from __future__ import annotations

import ctypes
import struct
import threading

import numpy as np
import torch

from alloykit import native
from alloykit.methods.selection import TopK, ordered_bits
from alloykit.methods.step_choices import RescaleMode, SignRule, Sparsification

L1_EPS = 1e-7
"""Below this L1 norm a task vector is left unscaled (mergekit's tolerance)."""
KEPT_BITS_BYTES = 64 * 1024**2
"""Most bytes of survivor bitmasks (one bit per entry and model) that the random sparsifiers
of one tensor keep from their measuring pass for the merge pass (``l1`` rescaling): 3 models'
masks of a 170M-entry tensor. Past it they draw again."""


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


def model_seed(seed: int, index: int) -> int:
    """The seed of input model ``index``'s random draws for a tensor whose seed is ``seed``."""
    return (seed + (index + 1) * 0x9E3779B97F4A7C15) % 2**63


def survivor_bytes(numel: int) -> int:
    """Bytes of one model's survivor bitmask for a tensor of ``numel`` entries."""
    return -(-numel // 8)


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


def check_della(density: float, epsilon: float) -> None:
    if density - epsilon <= 0 or density + epsilon >= 1:
        raise ValueError(
            f"della needs 0 < density - epsilon and density + epsilon < 1; "
            f"got density={density:g}, epsilon={epsilon:g}"
        )


def l1_factor(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """The factor restoring an L1 norm ``before`` from ``after`` (1 when either is ~0).

    mergekit 0.1.5's ``rescale``; ``L1_EPS`` is its tolerance.
    """
    usable = (before >= L1_EPS) & (after >= L1_EPS)
    return torch.where(usable, before / after.clamp(min=L1_EPS), 1.0)


class UniformDraws:
    """Uniform [0, 1) float32 numbers from numpy's PCG64 seeded with ``seed``, consumed in
    order, into one reused buffer.

    numpy's PCG64 on CPU is about three times faster than torch's CPU generator (random masks
    are the main cost of DARE and DELLA), gives the same numbers on every device, and gives
    the same sequence whether a tensor's entries are drawn at once or chunk by chunk.
    """

    _buffers = threading.local()  # one per thread, shared by all draws: no allocation churn

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._generator: np.random.Generator | None = None
        self._state: native.Pcg64 | None = None

    @property
    def generator(self) -> np.random.Generator:
        if self._generator is None:
            self._generator = np.random.Generator(np.random.PCG64(self.seed))
        return self._generator

    @property
    def state(self) -> native.Pcg64:
        """The same stream for the fused kernels, which draw as they go (a scan uses either
        this or :meth:`next`, never both)."""
        if self._state is None:
            self._state = native.Pcg64.seeded(self.seed)
        return self._state

    def next(self, like: torch.Tensor) -> torch.Tensor:
        """The next ``like.numel()`` numbers shaped like ``like``, valid until the thread's
        next draw."""
        count = like.numel()
        buffer = getattr(self._buffers, "array", None)
        if buffer is None or buffer.size < count:
            buffer = self._buffers.array = np.empty(count, dtype=np.float32)
        out = buffer[:count]
        self.generator.random(count, dtype=np.float32, out=out)
        return torch.from_numpy(out).reshape(like.shape).to(like.device)


class Sparsifier:
    """Thins one model's task vector, fed in chunks in row order, and rescales the survivors.

    ``density >= 1`` keeps the task vector as it is and ``density <= 0`` zeroes it, without
    drawing random numbers. Magnitude and Breadcrumbs masks need the whole tensor's cut-offs
    (:class:`~alloykit.methods.selection.TopK`: :meth:`count` / :meth:`settle` passes); ``l1``
    rescaling needs the whole tensor's L1 norms before and after (a :meth:`measure` pass).
    Random methods draw one uniform number per entry, in flat order, from a generator seeded
    with ``seed`` that restarts with every scan, so chunking never changes the draws.
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
        self.method = method
        self.density = density
        self.epsilon = epsilon
        self.seed = seed
        self.identity = density >= 1 or numel == 0
        self.zero = not self.identity and density <= 0
        thinning = not (self.identity or self.zero)
        self.rescale_mode = rescale_mode if thinning else None
        self.selection: TopK | None = None
        if thinning and method is Sparsification.MAGNITUDE:
            self.selection = TopK(numel, [max(1, int(density * numel))], dtype)
        elif thinning and method is Sparsification.BREADCRUMBS:
            keep = int(density * numel)
            top = min(int(gamma * numel), numel - keep)
            self.selection = TopK(numel, [top + keep, top], dtype)
        elif thinning and method is Sparsification.DELLA:
            check_della(density, epsilon)
        self.random = thinning and method in (Sparsification.RANDOM, Sparsification.DELLA)
        self.draws: UniformDraws | None = None
        self.l1 = torch.ones(())
        self._l1_sums: torch.Tensor | None = None
        self.numel = numel
        self.record_survivors = record_survivors and survivor_bytes(numel) <= KEPT_BITS_BYTES
        self.kept_bits: torch.Tensor | None = None
        """The measuring pass's survivors, one bit per entry (fused kernels only): with ``l1``
        rescaling the merge pass keeps the same entries, and reading them back is far cheaper
        than drawing (and, for DELLA, ranking) again."""
        self._bits_measured = 0
        self.start_scan()

    @property
    def levels(self) -> int:
        return self.selection.levels if self.selection is not None else 0

    @property
    def needs_l1(self) -> bool:
        return self.rescale_mode is RescaleMode.L1

    def count(self, delta: torch.Tensor) -> None:
        """Count a chunk's magnitudes (``delta`` may be overwritten)."""
        if self.selection is not None:
            self.selection.count(delta.abs_())

    def settle(self) -> None:
        if self.selection is not None:
            self.selection.settle()

    def start_scan(self) -> None:
        """Restart the draws and the hand-out of tied entries for another pass over the chunks."""
        if self.selection is not None:
            self.selection.start_scan()
        if self.random:
            self.draws = UniformDraws(self.seed)

    def count_deltas(self, x: torch.Tensor, base: torch.Tensor) -> None:
        """:meth:`count` for the fused kernels: the task vector is ``x - base``."""
        if self.selection is not None:
            self.selection.count_deltas(x, base)

    def measuring_keep(
        self, x: torch.Tensor, base: torch.Tensor, slot: int = 0, offset: int = 0
    ) -> native.Keep:
        """The thinning of a measuring pass's chunk at flat index ``offset`` for the fused
        kernels (:func:`measure_deltas`); a random sparsifier also records its survivors in
        :attr:`kept_bits`."""
        keep = self.native_keep(x, base, 1.0, slot)
        if self.random and self.record_survivors:
            if self.kept_bits is None:
                self.kept_bits = torch.zeros(survivor_bytes(self.numel), dtype=torch.uint8)
            keep.mask, keep.mask_offset = self.kept_bits.data_ptr(), offset
            self._bits_measured += x.numel()
        return keep

    def measured(self, keep: native.Keep, before: float, after: float) -> None:
        """Add a chunk's L1 norms before and after thinning, measured by the fused kernels."""
        self.native_done(keep)
        sums = torch.tensor([before, after], dtype=torch.float64)
        self._l1_sums = sums if self._l1_sums is None else self._l1_sums.add_(sums)

    def native_keep(
        self,
        x: torch.Tensor,
        base: torch.Tensor,
        weight: float,
        slot: int = 0,
        offset: int | None = None,
    ) -> native.Keep:
        """This chunk's thinning for the fused kernels (see ``ak_keep`` in kernels.c); DELLA's
        probabilities go to the calling thread's scratch buffer ``slot``. A merge pass passes
        the chunk's flat ``offset``: survivors recorded by the measuring pass are read back."""
        keep = native.Keep(weight=weight, probability=self.density, factor=1.0)
        if self.identity:
            keep.mode = native.KeepMode.ALL
            return keep
        if self.zero:
            keep.mode = native.KeepMode.NONE
            return keep
        if self.rescale_mode is RescaleMode.KEEP_RATE:
            keep.rescale = native.Rescale.PROBABILITY
        elif self.rescale_mode is RescaleMode.L1:
            keep.rescale = native.Rescale.FACTOR
            keep.factor = float(self.l1)
        if self.selection is not None:
            bands = 2 if self.method is Sparsification.BREADCRUMBS else 1
            keep.mode = native.KeepMode.BAND if bands == 2 else native.KeepMode.TOP
            for which in range(bands):
                keep.cut[which], all_equal, keep.left[which] = self.selection.native_cut(which)
                keep.all_equal[which] = int(all_equal)
            return keep
        if offset is not None and self.kept_bits is not None:
            keep.mode = native.KeepMode.MASK
            keep.mask, keep.mask_offset = self.kept_bits.data_ptr(), offset
            return keep
        assert self.draws is not None
        keep.mode = native.KeepMode.RANDOM
        keep.draws = ctypes.pointer(self.draws.state)
        width = x.shape[-1] if x.dim() else 1
        if self.method is Sparsification.DELLA and width > 1:
            check_della(self.density, self.epsilon)
            probabilities = native.scratch.get(slot, x.numel())
            span, low = 2 * self.epsilon, self.density - self.epsilon
            native.della_probabilities(x, base, width, span, low, probabilities)
            keep.probabilities = probabilities.data_ptr()
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
        sums = torch.stack(
            [
                torch.linalg.vector_norm(delta, 1, dtype=torch.float64),
                torch.linalg.vector_norm(keep.mul_(delta), 1, dtype=torch.float64),
            ]
        )
        # one running total: small tensors kept per chunk would fragment the heap
        self._l1_sums = sums if self._l1_sums is None else self._l1_sums.add_(sums)

    def settle_l1(self) -> None:
        assert self._l1_sums is not None
        before, after = self._l1_sums.float()
        self.l1 = l1_factor(before, after)
        self._l1_sums = None
        if self._bits_measured != self.numel:  # some chunks took the torch path
            self.kept_bits = None

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
        draws = self.draws.next(delta)
        # sign(p - u) is exact (a correctly rounded difference keeps its sign): 1 where u < p
        keep = draws.neg_().add_(probability).sign_().clamp_(min=0)
        return keep, probability


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
