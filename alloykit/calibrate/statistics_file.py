"""The statistics file: per-model Gram matrices and Fisher diagonals in one safetensors file.

Keys are ``"{statistic}:{tensor name}"`` (``gram:`` ``[in, in]`` for a linear weight
``[out, in]``, averaged over tokens; ``fisher:`` the parameter's shape, averaged over
examples), float32. The header's metadata records the model's fingerprint
(:func:`alloykit.calibrate.fingerprint.fingerprint`) so statistics are never used with another
model, and how they were computed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from alloykit.atomic_files import written_whole
from alloykit.checkpoint.safetensors_format import read_header
from alloykit.errors import AlloyError, CheckpointError

FORMAT_VERSION = "1"
KINDS = ("gram", "fisher")


class StatisticsError(AlloyError):
    """A statistics file is unreadable, of another format, or of another model."""


@dataclass(frozen=True)
class StatisticsInfo:
    """What a statistics file's header says about it."""

    path: Path
    fingerprint: str
    kinds: tuple[str, ...]
    samples: int
    tokens: int
    data: str
    seed: int


def metadata(
    *, fingerprint: str, kinds: tuple[str, ...], samples: int, tokens: int, data: str, seed: int
) -> dict[str, str]:
    """The header metadata of a statistics file (safetensors metadata values are strings)."""
    return {
        "alloykit.statistics": FORMAT_VERSION,
        "alloykit.model_fingerprint": fingerprint,
        "alloykit.kinds": ",".join(kinds),
        "alloykit.samples": str(samples),
        "alloykit.tokens": str(tokens),
        "alloykit.data": data,
        "alloykit.seed": str(seed),
    }


def write_statistics(path: Path, tensors: Mapping[str, object], meta: dict[str, str]) -> Path:
    """Write ``tensors`` (float32, contiguous) with ``meta`` to ``path``; it appears whole or
    not at all (written beside it, then renamed)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with written_whole(path) as partial:
        save_file(dict(tensors), str(partial), metadata=meta)
    return path


def read_info(path: str | Path) -> StatisticsInfo:
    """The metadata of statistics file ``path``; one clear line if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise StatisticsError(
            f"statistics file {str(path)!r} not found", "compute it with alloykit calibrate"
        )
    try:
        _, meta = read_header(path)
    except CheckpointError as exc:
        raise StatisticsError(f"statistics file {path}: {exc.message}") from None
    if meta.get("alloykit.statistics") != FORMAT_VERSION:
        raise StatisticsError(
            f"{path} is not an alloykit statistics file (no alloykit.statistics = "
            f"{FORMAT_VERSION!r} in its metadata)",
            "compute it with alloykit calibrate",
        )
    try:
        return StatisticsInfo(
            path=path,
            fingerprint=meta["alloykit.model_fingerprint"],
            kinds=tuple(k for k in meta["alloykit.kinds"].split(",") if k),
            samples=int(meta["alloykit.samples"]),
            tokens=int(meta["alloykit.tokens"]),
            data=meta["alloykit.data"],
            seed=int(meta["alloykit.seed"]),
        )
    except (KeyError, ValueError) as exc:
        raise StatisticsError(f"{path}: statistics metadata incomplete ({exc})") from None
