"""Exact top-k selection over values seen a chunk at a time, by radix counting.

For non-negative floats the order of the values is the order of their bit patterns read as
integers, so the ``k``-th largest value can be found digit by digit: count the top 16 bits of
every value (one ``bincount``), find the digit where the count from the top reaches ``k``,
then count the next 16 bits of the values that share that prefix, and so on (two passes for
float32). Counting is additive over chunks, needs no sort and no copy of the tensor, and is
several times faster than ``kthvalue`` on CPU. Among values equal to the cut-off the lowest
positions are kept, so exactly ``k`` entries are selected on every device and chunking.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from alloykit import native

DIGIT_BITS = 16
DIGITS = 1 << DIGIT_BITS
_BITS_VIEW = {8: torch.int64, 4: torch.int32, 2: torch.int16}


def ordered_bits(values: torch.Tensor) -> torch.Tensor:
    """Bit patterns of non-negative floats as signed integers of the same width and shape:
    they order exactly as the values do, and integers compare and sort faster."""
    return values.contiguous().view(_BITS_VIEW[values.element_size()])


def _bits(values: torch.Tensor) -> torch.Tensor:
    return ordered_bits(values).reshape(-1)


@dataclass
class _Cut:
    k: int
    prefix: int = 0  # bits of the cut-off value found so far
    above: int = 0  # entries known to be larger than the cut-off
    room: int = 0  # entries equal to the cut-off that are kept
    equal: int = 0  # entries equal to the cut-off
    left: int = 0  # of those kept, not yet handed out in the current scan
    value: float = 0.0  # the cut-off as a number
    counts: torch.Tensor | None = field(default=None, repr=False)


class TopK:
    """Selects the ``k`` largest of ``numel`` non-negative values, for each ``k`` in ``ks``.

    Use: for each of :meth:`levels` passes, feed every chunk to :meth:`count` in order and then
    call :meth:`settle`; afterwards call :meth:`start_scan` and feed the chunks again, in order,
    to :meth:`mask`. ``k <= 0`` selects nothing and ``k >= numel`` everything, without passes.
    """

    def __init__(self, numel: int, ks: list[int], dtype: torch.dtype) -> None:
        self.numel = numel
        self.cuts = [_Cut(k) for k in ks]
        self.dtype = dtype
        self.width = torch.empty((), dtype=dtype).element_size() * 8
        self.level = 0
        active = any(0 < k < numel for k in ks)
        self.levels = self.width // DIGIT_BITS if active else 0

    def _shift(self) -> int:
        return self.width - DIGIT_BITS * (self.level + 1)

    def count(self, values: torch.Tensor) -> None:
        """Add ``values`` (a chunk, any shape) to the counts of the current level."""
        bits = _bits(values)
        shift = self._shift()
        groups: dict[int, list[_Cut]] = {}
        for cut in self._active():
            groups.setdefault(cut.prefix, []).append(cut)
        for prefix, cuts in groups.items():
            if self.level == 0:
                digits = bits >> shift
                counts = torch.bincount(digits, minlength=DIGITS)
            else:  # values outside the prefix's range land in the two extra end bins
                digits = (bits >> shift if shift else bits) - (prefix << DIGIT_BITS)
                digits = digits.clamp_(-1, DIGITS).add_(1)
                counts = torch.bincount(digits, minlength=DIGITS + 2)[1:-1]
            for cut in cuts:  # running totals, added in place: no per-chunk garbage
                if cut.counts is None:
                    cut.counts = counts.clone()
                else:
                    cut.counts.add_(counts)

    def count_deltas(self, x: torch.Tensor, base: torch.Tensor) -> None:
        """:meth:`count` the magnitudes ``|x - base|`` without forming them (fused kernel;
        needs :func:`alloykit.native.usable` tensors and float32 values)."""
        shift = self._shift()
        groups: dict[int, list[_Cut]] = {}
        for cut in self._active():
            groups.setdefault(cut.prefix, []).append(cut)
        for prefix, cuts in groups.items():
            counts = cuts[0].counts
            if counts is None:
                counts = torch.zeros(2, DIGITS, dtype=torch.int64)  # two tables, see kernels.c
            native.count_digits(x, base, shift, self.level, prefix, counts)
            for cut in cuts:  # cuts sharing a prefix share their counts until settled
                cut.counts = counts

    def native_cut(self, which: int) -> tuple[float, bool, int]:
        """Cut ``which`` for the fused kernels: (value, every equal value kept, equal values
        still to hand out in this scan). Nothing is kept for ``k <= 0``, all for ``k >= numel``."""
        cut = self.cuts[which]
        if cut.k <= 0:
            return float("nan"), False, 0  # no magnitude compares >= NaN
        if cut.k >= self.numel:
            return -1.0, True, 0
        return cut.value, cut.room == cut.equal, cut.left

    def handed_out(self, which: int, left: int) -> None:
        """Record that the fused kernels handed out equal values, ``left`` remaining."""
        self.cuts[which].left = left

    def settle(self) -> None:
        """Fix the current digit of each cut-off from the counts, and move to the next level."""
        for cut in self._active():
            assert cut.counts is not None
            if cut.counts.dim() == 2:  # the fused kernel's two tables
                cut.counts = cut.counts.sum(0)
            from_top = cut.counts.flip(0).cumsum(0)
            need = cut.k - cut.above
            index = int(torch.searchsorted(from_top, need))  # first with cumulative >= need
            digit = DIGITS - 1 - index
            cut.above += int(from_top[index]) - int(cut.counts[digit])
            cut.prefix = (cut.prefix << DIGIT_BITS) | digit
            if self.level == self.levels - 1:
                cut.room = cut.k - cut.above
                cut.equal = int(cut.counts[digit]) if cut.counts is not None else 0
                view = _BITS_VIEW[self.width // 8]
                cut.value = torch.tensor(cut.prefix, dtype=view).view(self.dtype).item()
            cut.counts = None
        self.level += 1

    def start_scan(self) -> None:
        """Begin handing out the entries equal to each cut-off, lowest positions first."""
        for cut in self.cuts:
            cut.left = cut.room

    def mask(self, values: torch.Tensor, which: int = 0) -> torch.Tensor:
        """1.0 where an entry of this chunk is among the ``ks[which]`` largest, else 0.0.

        Chunks must come in order. Numbers rather than booleans: arithmetic on them is much
        faster than boolean indexing on CPU, and ``sign(values - cut)`` is exact.
        """
        cut = self.cuts[which]
        if cut.k <= 0:
            return torch.zeros_like(values)
        if cut.k >= self.numel:
            return torch.ones_like(values)
        if cut.room == cut.equal:  # every entry equal to the cut-off is kept: values >= cut
            return torch.sub(cut.value, values).sign_().neg_().add_(1).clamp_(max=1)
        keep = torch.sub(values, cut.value).sign_().clamp_(min=0)
        if cut.left:
            equal = (values == cut.value).reshape(-1)
            positions = equal.nonzero().squeeze(1)[: cut.left]
            keep.view(-1)[positions] = 1.0
            cut.left -= positions.numel()
        return keep

    def _active(self) -> list[_Cut]:
        return [c for c in self.cuts if 0 < c.k < self.numel]


def top_k_mask(values: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of the ``k`` largest entries of a tensor of non-negative values.

    Among entries equal to the cut-off the lowest (flat) positions are kept, so exactly ``k``
    are selected and ``top_k_mask(v, a)`` is contained in ``top_k_mask(v, b)`` when ``a <= b``.
    """
    selection = TopK(values.numel(), [k], values.dtype)
    for _ in range(selection.levels):
        selection.count(values)
        selection.settle()
    selection.start_scan()
    return selection.mask(values) > 0
