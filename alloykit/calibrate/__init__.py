"""Calibration: run a model on a few hundred examples and record the statistics that
data-driven merges need (input Gram matrices of linear layers for RegMean, diagonal Fisher
information for Fisher merging), in a file tied to the model by its fingerprint.

Names are imported on first use: planning reads ``fingerprint`` and statistics headers without
torch, while calibrating runs models.
"""

from __future__ import annotations

import importlib
from typing import Any

# Torch-free, and named like its module: bound here so the package attribute is the function.
from alloykit.calibrate.fingerprint import fingerprint as fingerprint

_WHERE = {
    "ArchitectureError": "alloykit.calibrate.recorder",
    "CalibrationDataError": "alloykit.calibrate.examples",
    "CalibrationSettings": "alloykit.calibrate.cache",
    "StatisticsError": "alloykit.calibrate.statistics_file",
    "StatisticsInfo": "alloykit.calibrate.statistics_file",
    "cache_dir": "alloykit.calibrate.cache",
    "calibrate": "alloykit.calibrate.run",
    "load_examples": "alloykit.calibrate.examples",
    "read_info": "alloykit.calibrate.statistics_file",
    "statistics_for": "alloykit.calibrate.cache",
}

__all__ = sorted([*_WHERE, "fingerprint"])


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
