"""Thinning of one model's task vector for the fused kernels, without torch.

What a sparsifier must carry between the chunks of a tensor and between its passes: the
random draws (restarted every scan, so chunking never changes them), the measuring pass's
survivors as bits, the L1 norms before and after thinning and the factor they give. Both the
torch path (:class:`alloykit.methods.steps.Sparsifier`, which adds the magnitude cut-offs
and the operations on tensors) and the torch-free raw path (:mod:`alloykit.methods.stored`) keep
that state here, so the two hand the kernels the same :class:`~alloykit.native.Keep` values.
"""

from __future__ import annotations

import ctypes
import struct

import numpy as np

from alloykit import native
from alloykit.methods.step_choices import RescaleMode, Sparsification

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


def model_seed(seed: int, index: int) -> int:
    """The seed of input model ``index``'s random draws for a tensor whose seed is ``seed``."""
    return (seed + (index + 1) * 0x9E3779B97F4A7C15) % 2**63


def survivor_bytes(numel: int) -> int:
    """Bytes of one model's survivor bitmask for a tensor of ``numel`` entries."""
    return -(-numel // 8)


def check_della(density: float, epsilon: float) -> None:
    if density - epsilon <= 0 or density + epsilon >= 1:
        raise ValueError(
            f"della needs 0 < density - epsilon and density + epsilon < 1; "
            f"got density={density:g}, epsilon={epsilon:g}"
        )


def l1_factor(before: float, after: float) -> float:
    """The factor restoring an L1 norm ``before`` from ``after`` (1 when either is ~0), in
    float32: mergekit 0.1.5's ``rescale``, ``L1_EPS`` its tolerance."""
    eps = np.float32(L1_EPS)
    first, second = np.float32(before), np.float32(after)
    if first >= eps and second >= eps:
        return float(first / max(second, eps))
    return 1.0


class UniformDraws:
    """Uniform [0, 1) float32 numbers from numpy's PCG64 seeded with ``seed``.

    numpy's PCG64 on CPU is about three times faster than torch's CPU generator (random masks
    are the main cost of DARE and DELLA), gives the same numbers on every device, and gives
    the same sequence whether a tensor's entries are drawn at once or chunk by chunk. The
    fused kernels continue the same stream in C (:attr:`state`); the torch path draws with
    :meth:`numbers`.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._generator: np.random.Generator | None = None
        self._state: native.Pcg64 | None = None

    @property
    def state(self) -> native.Pcg64:
        """The stream for the fused kernels, which draw as they go (a scan uses either this
        or :meth:`numbers`, never both)."""
        if self._state is None:
            self._state = native.Pcg64.seeded(self.seed)
        return self._state

    def numbers(self, out: np.ndarray) -> np.ndarray:
        """Fill float32 ``out`` with the next numbers."""
        if self._generator is None:
            self._generator = np.random.Generator(np.random.PCG64(self.seed))
        self._generator.random(out.size, dtype=np.float32, out=out)
        return out


class Thinning:
    """One model's thinning of one tensor as the fused kernels see it, fed in row order.

    ``density >= 1`` keeps the task vector as it is and ``density <= 0`` zeroes it, without
    drawing random numbers. Random methods draw one uniform number per entry, in flat order,
    restarting with every scan. ``l1`` rescaling needs the whole tensor's L1 norms before and
    after thinning (a measuring pass); the random survivors of that pass are kept as bits
    (within :data:`KEPT_BITS_BYTES`) for the merge pass to read back instead of drawing again.
    Magnitude cut-offs are the torch path's (:class:`alloykit.methods.steps.Sparsifier`).
    """

    def __init__(
        self,
        method: Sparsification,
        numel: int,
        *,
        density: float,
        epsilon: float = 0.0,
        rescale_mode: RescaleMode | None = None,
        seed: int = 0,
        record_survivors: bool = True,
    ) -> None:
        self.method = method
        self.density = density
        self.epsilon = epsilon
        self.seed = seed
        self.numel = numel
        self.identity = density >= 1 or numel == 0
        self.zero = not self.identity and density <= 0
        thinning = not (self.identity or self.zero)
        self.rescale_mode = rescale_mode if thinning else None
        if thinning and method is Sparsification.DELLA:
            check_della(density, epsilon)
        self.random = thinning and method in (Sparsification.RANDOM, Sparsification.DELLA)
        self.draws: UniformDraws | None = None
        self.l1 = 1.0
        self._l1_sums: list[float] | None = None
        self.record_survivors = record_survivors and survivor_bytes(numel) <= KEPT_BITS_BYTES
        self.kept_bits: np.ndarray | None = None
        """The measuring pass's survivors, one bit per entry (fused kernels only)."""
        self._bits_measured = 0
        self.start_scan()

    @property
    def needs_l1(self) -> bool:
        return self.rescale_mode is RescaleMode.L1

    def start_scan(self) -> None:
        """Restart the draws for another pass over the chunks."""
        if self.random:
            self.draws = UniformDraws(self.seed)

    def keep(
        self,
        weight: float,
        *,
        offset: int | None = None,
        probabilities: int | None = None,
        by_magnitude: bool = False,
    ) -> native.Keep:
        """This chunk's thinning for the fused kernels (see ``ak_keep`` in kernels.c); a merge
        pass passes the chunk's flat ``offset``, and survivors recorded by the measuring pass
        are read back; ``probabilities``: the address of DELLA's keep probabilities. With
        ``by_magnitude`` the caller sets the magnitude cut-offs (only rescaling is set here)."""
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
            keep.factor = self.l1
        if by_magnitude:
            return keep
        if offset is not None and self.kept_bits is not None:
            keep.mode = native.KeepMode.MASK
            keep.mask, keep.mask_offset = self.kept_bits.ctypes.data, offset
            return keep
        assert self.draws is not None
        keep.mode = native.KeepMode.RANDOM
        keep.draws = ctypes.pointer(self.draws.state)
        if probabilities is not None:
            keep.probabilities = probabilities
        return keep

    def record(self, keep: native.Keep, offset: int, numel: int) -> native.Keep:
        """Have a measuring pass's random ``keep`` of ``numel`` entries at flat ``offset``
        record its survivors in :attr:`kept_bits`."""
        if self.random and self.record_survivors:
            if self.kept_bits is None:
                self.kept_bits = np.zeros(survivor_bytes(self.numel), dtype=np.uint8)
            keep.mask, keep.mask_offset = self.kept_bits.ctypes.data, offset
            self._bits_measured += numel
        return keep

    def add_l1(self, before: float, after: float) -> None:
        """Add a chunk's L1 norms before and after thinning (summed in float64, as the fused
        kernels sum: every path then gets the same float32 factor)."""
        if self._l1_sums is None:
            self._l1_sums = [before, after]
        else:
            self._l1_sums[0] += before
            self._l1_sums[1] += after

    def settle_l1(self) -> None:
        assert self._l1_sums is not None
        self.l1 = l1_factor(*self._l1_sums)
        self._l1_sums = None
        if self._bits_measured != self.numel:  # some chunks took the torch path
            self.kept_bits = None
