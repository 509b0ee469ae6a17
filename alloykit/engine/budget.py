"""The default byte budget of a merge: a share of the memory the machine has available.

The budget bounds the working memory of the tensors in flight; it decides how many tensors
merged whole (the SVD methods, WUDI) run at once. A fixed 1 GB default left every matrix of a
1.1B model above the budget on any machine, so whole-matrix merges ran one matrix at a time on
one core however much memory was free. The default is now a fraction of the memory available
when the process first asks (Linux's ``MemAvailable``: free memory plus what the kernel can
reclaim without swapping), never below the old 1 GB. The rest is left to what the budget does
not count (the interpreter, torch, the workers' staging buffers), to the page cache the inputs
are read through, and to other programs. A budget the user passes is used exactly as given.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from alloykit.units import human_bytes

BUDGET_FLOOR = 10**9
"""The smallest default budget, the fixed default before it followed the machine (1 GB)."""
AVAILABLE_FRACTION = 0.5
"""The share of the available memory the default budget takes."""
MEMINFO = Path("/proc/meminfo")


def default_budget(available: int | None) -> int:
    """The default budget for ``available`` bytes of available memory: ``AVAILABLE_FRACTION``
    of it, at least ``BUDGET_FLOOR``; the floor where the figure is unknown (None)."""
    if available is None:
        return BUDGET_FLOOR
    return max(BUDGET_FLOOR, int(available * AVAILABLE_FRACTION))


def describe_budget(budget: int, available: int | None) -> str:
    """How ``--dry-run`` states the budget: its size, and where it came from when it is the
    default derived from ``available`` bytes (None: the caller passed it)."""
    if available is None:
        return f"{human_bytes(budget)} (given)"
    share = f"{AVAILABLE_FRACTION:.0%} of {human_bytes(available)} available"
    floor = f", at least {human_bytes(BUDGET_FLOOR)}"
    return f"{human_bytes(budget)} (default: {share}{floor}; --memory-budget sets it)"


@functools.cache
def available_memory_bytes() -> int | None:
    """The memory available to new work, read once per process: ``MemAvailable`` from
    ``/proc/meminfo`` on Linux, else the free physical pages ``os.sysconf`` reports; None
    where neither exists."""
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None
