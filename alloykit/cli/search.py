"""``alloykit search``: evolve a merge recipe on the user's tasks."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from alloykit.cli.guard import guarded, is_tty
from alloykit.cli.options import Debug

console = Console(highlight=False, soft_wrap=True)


def search(
    spec: Annotated[Path, typer.Argument(help="Search spec (YAML): recipe with ranges, tasks.")],
    out: Annotated[Path, typer.Argument(help="Output directory (trials, best recipe, report).")],
    workers: Annotated[
        int, typer.Option(min=1, help="Candidates evaluated at once (local processes, or actors).")
    ] = 1,
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray",
            help="Run the workers on a Ray cluster: its address, or 'local' to start one here.",
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda[:N], for merging and scoring.")] = "cpu",
    threads: Annotated[
        int | None,
        typer.Option(min=1, help="torch CPU threads of this process (1 suits tiny models)."),
    ] = None,
    write_best: Annotated[
        bool, typer.Option("--write-best", help="Merge the best recipe into OUT/model/.")
    ] = False,
    debug: Debug = False,
) -> None:
    """Search merge recipes: rerun the same command to resume a stopped search."""
    with guarded(debug):
        from transformers.utils import logging as transformers_logging

        from alloykit.search import load_spec, run_search

        loaded = load_spec(spec)
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        transformers_logging.disable_progress_bar()
        started = time.perf_counter()
        best = [float("-inf")]

        def on_trial(trial, done: int, total: int) -> None:
            best[0] = max(best[0], trial.fitness)
            elapsed = time.perf_counter() - started
            left = elapsed / max(done, 1) * (total - done)
            line = (
                f"candidates {done}/{total}  best {100 * best[0]:.1f}  "
                f"this {100 * trial.fitness:.1f}  ~{left:.0f} s left"
            )
            if is_tty():
                console.print(line, end="\r")
            elif done == total or done % 10 == 0:
                console.print(line)

        result = run_search(
            loaded,
            out,
            workers=workers,
            device=device,
            use_ray=ray is not None,
            ray_address=None if ray in (None, "local") else ray,
            write_best=write_best,
            on_trial=on_trial,
        )
        mean = sum(result.test_scores.values()) / len(result.test_scores)
        console.print()
        console.print(
            f"best: trial {result.best.trial}, {loaded.fitness.split} "
            f"{100 * result.best.fitness:.1f}, held-out {loaded.test_split} {100 * mean:.1f}"
        )
        console.print(f"wrote {out / 'best.yml'}, {out / 'report.md'}, {out / 'trials.csv'}")
        if write_best:
            console.print(f"merged the best recipe into {out / 'model'}")
