"""``alloykit calibrate``: record the statistics data-driven merges need (Grams, Fisher)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from alloykit.cli.guard import guarded, is_tty
from alloykit.cli.options import Debug

console = Console(highlight=False, soft_wrap=True)


def calibrate_command(
    model: Annotated[Path, typer.Argument(help="Local model directory (with its tokenizer).")],
    data: Annotated[
        Path,
        typer.Option(
            help='A task directory or task.yaml (its train split), or a JSONL of {"prompt"} / '
            '{"text"} lines.'
        ),
    ],
    out: Annotated[Path, typer.Option(help="The statistics file to write (.safetensors).")],
    kinds: Annotated[str, typer.Option(help="Comma list of gram, fisher.")] = "gram,fisher",
    samples: Annotated[int, typer.Option(min=1, help="Examples to read (a seeded subset).")] = 256,
    seed: Annotated[int, typer.Option(help="Seed of the subset of examples.")] = 0,
    device: Annotated[str, typer.Option(help="cpu or cuda[:N].")] = "cpu",
    batch_size: Annotated[
        int, typer.Option(min=1, help="Examples per forward pass (Grams alone).")
    ] = 16,
    threads: Annotated[
        int | None,
        typer.Option(min=1, help="CPU threads for torch (default: torch's; 1 suits tiny models)."),
    ] = None,
    debug: Debug = False,
) -> None:
    """Run MODEL on examples and write its Gram matrices and Fisher diagonals to OUT."""
    with guarded(debug):
        from alloykit.calibrate import calibrate, read_info
        from alloykit.engine import check_device

        check_device(device)
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        with _progress() as on_progress:
            written = calibrate(
                model,
                data,
                out,
                kinds=[kind.strip() for kind in kinds.split(",") if kind.strip()],
                samples=samples,
                seed=seed,
                device=device,
                batch_size=batch_size,
                on_progress=on_progress,
            )
        info = read_info(written)
        console.print(
            f"wrote {written} ({', '.join(info.kinds)}; {info.samples} examples, "
            f"{info.tokens} tokens)"
        )


@contextmanager
def _progress() -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar of examples read (on a terminal), as an ``on_progress`` callback."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        TextColumn("calibrating"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("examples"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        disable=not is_tty(),
        console=Console(stderr=True),
    )
    task = bar.add_task("calibrate", total=None)

    def advance(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    with bar:
        yield advance
