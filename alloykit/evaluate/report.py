"""How evaluation looks in a terminal: a progress bar per task, a results table, JSON."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from rich.console import Console
from rich.table import Table

from alloykit.evaluate.runner import OnProgress, TaskResult


def results_table(results: Sequence[TaskResult], title: str | None = None) -> Table:
    """One row per (task, metric): score and the number of examples (tokens for perplexity)."""
    table = Table(title=title, title_justify="left")
    table.add_column("task")
    table.add_column("metric")
    table.add_column("score", justify="right")
    table.add_column("n", justify="right")
    for result in results:
        digits = 3 if result.metric == "perplexity" else 4
        table.add_row(result.task, result.metric, f"{result.score:.{digits}f}", str(result.n))
    return table


def results_json(results: Sequence[TaskResult], model: str) -> str:
    """``{"model": ..., "results": [{task, type, metric, score, n, split, seconds}, ...]}``."""
    return json.dumps({"model": model, "results": [r.to_dict() for r in results]}, indent=2)


@contextmanager
def progress_bars(enabled: bool) -> Iterator[OnProgress | None]:
    """An ``on_progress`` callback drawing one bar per task on stderr (None when disabled)."""
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
    )
    bars: dict[str, int] = {}

    def on_progress(task: str, done: int, total: int) -> None:
        if task not in bars:
            bars[task] = progress.add_task(task, total=total)
        progress.update(bars[task], completed=done, total=total)

    with progress:
        yield on_progress
