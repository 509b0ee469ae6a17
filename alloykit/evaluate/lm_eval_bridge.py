"""Run lm-evaluation-harness tasks on a model, reported as :class:`TaskResult` rows.

Optional: ``pip install "alloykit[lm-eval]"``. lm-eval is imported only when asked for. The
model is loaded by alloykit (local files only, no remote code) and handed to lm-eval's HF
wrapper, so lm-eval never fetches a model. Local task definitions are lm-eval's own YAML
format, found through ``include_path``; with one given, lm-eval's built-in tasks are not
indexed (that takes tens of seconds, and their data would need downloading).
"""

from __future__ import annotations

import difflib
import time
from collections.abc import Sequence
from pathlib import Path

from alloykit.errors import AlloyError
from alloykit.evaluate.runner import TaskResult, first_line, load_model

INSTALL_HINT = 'pip install "alloykit[lm-eval]"'


def run_lm_eval(
    model_or_path,
    tasks: Sequence[str],
    *,
    include_path: str | Path | None = None,
    limit: int | None = None,
    batch_size: int = 64,
    device: str | None = None,
    tokenizer=None,
) -> list[TaskResult]:
    """Score lm-eval ``tasks`` (names) with ``simple_evaluate``; ``limit``: first N per task."""
    simple_evaluate, HFLM = harness_entry_points("--lm-eval")
    if isinstance(model_or_path, (str, Path)):
        model, tokenizer = load_model(model_or_path, device or "cpu")
    else:
        model = model_or_path
        if tokenizer is None:
            raise AlloyError("run_lm_eval: a loaded model needs its tokenizer", "pass tokenizer=")
    manager = task_manager(include_path, "--lm-eval-include")
    check_task_names(manager, tasks, include_path, "--lm-eval")
    started = time.perf_counter()
    wrapper = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    try:
        output = simple_evaluate(
            model=wrapper,
            tasks=list(tasks),
            task_manager=manager,
            limit=limit,
            log_samples=False,
            bootstrap_iters=0,
        )
    except FileNotFoundError as exc:
        raise AlloyError(
            f"--lm-eval: a task's data is missing ({first_line(exc)})",
            "data_files paths in lm-eval task YAML are relative to the working directory",
        ) from None
    seconds = time.perf_counter() - started
    return _results(output, seconds)


def harness_entry_points(option: str):
    """lm-eval's ``simple_evaluate`` and HF model wrapper, or an install hint naming
    ``option`` (what asked for lm-eval) if it is not installed."""
    try:
        from lm_eval import simple_evaluate
        from lm_eval.models.huggingface import HFLM
    except ImportError:
        raise AlloyError(
            f"{option}: lm-evaluation-harness is not installed", INSTALL_HINT
        ) from None
    return simple_evaluate, HFLM


def task_manager(include_path: str | Path | None, option: str):
    """lm-eval's task index: of ``include_path`` alone when given (its built-in tasks are
    not indexed, see the module docstring), else of lm-eval's built-in tasks."""
    from lm_eval.tasks import TaskManager

    if include_path is not None and not Path(include_path).exists():
        raise AlloyError(f"{option}: {str(include_path)!r} not found")
    return TaskManager(
        include_path=str(include_path) if include_path is not None else None,
        include_defaults=include_path is None,
    )


def check_task_names(
    manager, names: Sequence[str], include_path: str | Path | None, option: str
) -> None:
    """One line naming the first task ``manager`` does not know, with the closest name."""
    for name in names:
        if name not in manager.all_tasks:
            close = difflib.get_close_matches(name, manager.all_tasks, n=1)
            where = f"in {include_path}" if include_path is not None else "among lm-eval's tasks"
            hint = f"did you mean {close[0]!r}?" if close else "check the task: key of its YAML"
            raise AlloyError(f"{option}: no task named {name!r} {where}", hint)


def _results(output: dict, seconds: float) -> list[TaskResult]:
    rows = []
    for task, metrics in output["results"].items():
        config = output.get("configs", {}).get(task, {})
        split = config.get("test_split") or config.get("validation_split") or "?"
        n = output.get("n-samples", {}).get(task, {}).get("effective", 0)
        for key, value in metrics.items():
            metric, comma, _ = key.partition(",")
            if not comma or metric.endswith("_stderr") or not isinstance(value, (int, float)):
                continue
            rows.append(TaskResult(task, "lm-eval", metric, float(value), n, split, seconds))
    return rows
