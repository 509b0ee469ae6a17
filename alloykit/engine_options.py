"""What the engine is told besides the plan: device, threads, memory budget, chunk size.

Kept apart from :mod:`alloykit.engine`, which computes with torch, so that ``--dry-run`` can
estimate a merge's memory, and a bad ``--device`` be refused, without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_BUDGET = 1024**3
CHUNK_ELEMENTS = {"cpu": 1 << 18, "cuda": 1 << 24}
"""Values per input per chunk: small enough on CPU that a chunk's temporaries stay in cache,
large enough on CUDA that a chunk fills the GPU."""


@dataclass
class EngineOptions:
    device: str = "cpu"
    threads: int = 2
    budget_bytes: int = DEFAULT_BUDGET
    chunk_elements: int | None = None  # None: CHUNK_ELEMENTS of the device type

    def chunk_size(self) -> int:
        if self.chunk_elements is not None:
            return max(1, self.chunk_elements)
        return CHUNK_ELEMENTS["cuda" if self.device.startswith("cuda") else "cpu"]


def check_device(name: str) -> None:
    """Refuse an unknown or absent ``--device`` before any work; only a device other than the
    CPU needs torch to check (:func:`alloykit.engine.resolve_device`)."""
    if name != "cpu":
        from alloykit.engine import resolve_device

        resolve_device(name)
