"""What an adapter captures of each changed tensor: the rows of the table and the README."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum


class Capture(str, Enum):
    """How a changed tensor ended up in the adapter."""

    LOW_RANK = "low-rank"
    FULL = "full"  # saved whole, as one of PEFT's modules_to_save
    NOT_CAPTURED = "not captured"  # cannot be low-rank (1-D, >2-D) and not saved in full
    EXCLUDED = "excluded"  # left out by --include / --exclude
    ZERO = "zero"  # a merge cancelled it out


@dataclass(frozen=True)
class TensorReport:
    """One changed tensor: its delta's squared norm and what the adapter leaves of it."""

    name: str
    shape: tuple[int, ...]
    capture: Capture
    delta_sq: float  # ‖ΔW‖²_F
    residual_sq: float  # ‖ΔW − adapter's ΔW‖²_F
    rank: int | None = None

    @property
    def relative_error(self) -> float:
        return (self.residual_sq / self.delta_sq) ** 0.5 if self.delta_sq > 0 else 0.0

    @property
    def energy(self) -> float:
        """Share of ‖ΔW‖²_F the adapter keeps (1 − relative_error² for an SVD truncation)."""
        return 1.0 - self.residual_sq / self.delta_sq if self.delta_sq > 0 else 1.0


def overall_error(rows: Sequence[TensorReport]) -> float:
    """‖all deltas − adapter‖_F / ‖all deltas‖_F over every changed tensor."""
    total = sum(r.delta_sq for r in rows)
    return (sum(r.residual_sq for r in rows) / total) ** 0.5 if total > 0 else 0.0


def shape_text(shape: tuple[int, ...]) -> str:
    return "×".join(str(d) for d in shape) or "scalar"


def markdown_table(rows: Sequence[TensorReport]) -> list[str]:
    lines = [
        "| tensor | captured | shape | rank | energy kept | relative error |",
        "| --- | --- | --- | ---: | ---: | ---: |",
    ]
    for row in rows:
        rank = "" if row.rank is None else str(row.rank)
        lines.append(
            f"| `{row.name}` | {row.capture.value} | {shape_text(row.shape)} | {rank} "
            f"| {row.energy:.4f} | {row.relative_error:.4f} |"
        )
    return lines


def adapter_card(title: str, summary: Sequence[str], rows: Sequence[TensorReport]) -> str:
    """The README.md of an adapter alloykit wrote."""
    missed = [r for r in rows if r.capture in (Capture.NOT_CAPTURED, Capture.EXCLUDED)]
    lines = [
        "---",
        "library_name: peft",
        "tags:",
        "- alloykit",
        "- lora",
        "---",
        "",
        f"# {title}",
        "",
        *summary,
        "",
        "Relative error is ‖ΔW − scale·B·A‖_F / ‖ΔW‖_F per tensor (1 where nothing is captured);",
        f"over all changed tensors it is {overall_error(rows):.4f}.",
    ]
    if missed:
        lines += [
            "",
            f"**{len(missed)} changed tensors are not in this adapter** (marked *not captured* "
            "or *excluded* below): applying it does not reproduce them.",
        ]
    return "\n".join([*lines, "", "## Tensors", "", *markdown_table(rows)]) + "\n"
