"""Test helpers: statistics files of tiny models, as ``alloykit calibrate`` writes them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file

from alloykit.calibrate.fingerprint import fingerprint
from alloykit.checkpoint.source import open_source


def has_gram(name: str, shape: tuple[int, ...]) -> bool:
    """The tensors the tests treat as linear layers reached by calibration hooks."""
    return len(shape) == 2 and "embed" not in name


def write_statistics(
    model: Path,
    path: Path,
    *,
    seed: int,
    kinds: tuple[str, ...] = ("gram", "fisher"),
    fingerprint_of: Path | None = None,
    edit: Callable[[dict[str, torch.Tensor]], None] | None = None,
) -> Path:
    """Random but well-formed statistics of ``model`` (Gram matrices averaged over tokens,
    positive Fisher diagonals), recording the fingerprint of ``fingerprint_of`` (default: the
    model itself); ``edit`` may alter the tensors before they are saved."""
    source = open_source(str(model))
    generator = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for name, meta in source.tensors.items():
        if not meta.dtype.is_floating_point:
            continue
        if "fisher" in kinds:
            tensors[f"fisher:{name}"] = torch.rand(meta.shape, generator=generator) + 0.1
        if "gram" in kinds and has_gram(name, meta.shape):
            tokens = torch.randn(3 * meta.shape[1], meta.shape[1], generator=generator)
            tensors[f"gram:{name}"] = tokens.T @ tokens / tokens.shape[0]
    if edit is not None:
        edit(tensors)
    owner = source if fingerprint_of is None else open_source(str(fingerprint_of))
    metadata = {
        "alloykit.statistics": "1",
        "alloykit.model_fingerprint": fingerprint(owner),
        "alloykit.kinds": ",".join(kinds),
        "alloykit.samples": "4",
        "alloykit.tokens": "64",
        "alloykit.data": "random (test)",
        "alloykit.seed": str(seed),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    return path
