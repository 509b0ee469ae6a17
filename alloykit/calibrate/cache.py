"""Statistics computed once per (model, data, settings) and kept in a cache directory.

A recipe's model entry with ``data:`` needs statistics that ``alloykit merge`` computes when
missing; the cache key is the model's fingerprint, the SHA-256 of the data files read and the
settings that change the numbers (kinds, samples, seed), so a changed model or data file never
reuses stale statistics.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from alloykit.calibrate.examples import content_hash, load_examples
from alloykit.calibrate.fingerprint import fingerprint
from alloykit.calibrate.run import DEFAULT_BATCH_SIZE, DEFAULT_SAMPLES, OnProgress, calibrate
from alloykit.calibrate.statistics_file import KINDS
from alloykit.checkpoint.source import open_source

CACHE_ENV = "ALLOYKIT_CACHE"


@dataclass(frozen=True)
class CalibrationSettings:
    """How statistics are computed; ``device`` and ``batch_size`` do not enter the cache key
    (they change speed, not what is measured, beyond float rounding)."""

    kinds: tuple[str, ...] = KINDS
    samples: int = DEFAULT_SAMPLES
    seed: int = 0
    device: str = field(default="cpu", compare=False)
    batch_size: int = field(default=DEFAULT_BATCH_SIZE, compare=False)

    def key(self) -> dict[str, object]:
        return {"kinds": sorted(self.kinds), "samples": self.samples, "seed": self.seed}


def cache_dir() -> Path:
    """``$ALLOYKIT_CACHE/statistics``, else ``~/.cache/alloykit/statistics``."""
    root = os.environ.get(CACHE_ENV)
    base = Path(root) if root else Path.home() / ".cache" / "alloykit"
    return base / "statistics"


def statistics_for(
    model_source: str | Path,
    data: str | Path,
    settings: CalibrationSettings | None = None,
    *,
    on_progress: OnProgress | None = None,
) -> Path:
    """The statistics file of ``model_source`` on ``data``: from the cache, or calibrated now."""
    settings = settings or CalibrationSettings()
    chosen = load_examples(data, settings.samples, settings.seed)
    key = {
        "model": fingerprint(open_source(str(model_source))),
        "data": content_hash(chosen.files),
        "settings": settings.key(),
    }
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    path = cache_dir() / f"{name}.safetensors"
    if path.is_file():
        return path
    return calibrate(
        model_source,
        data,
        path,
        kinds=settings.kinds,
        samples=settings.samples,
        seed=settings.seed,
        device=settings.device,
        batch_size=settings.batch_size,
        on_progress=on_progress,
    )
