"""Run tasks on a model: load it (local files only), score each task, report :class:`TaskResult`."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from alloykit.checkpoint.transformers_loading import local_load_options
from alloykit.errors import AlloyError, CheckpointError
from alloykit.evaluate.answers import Strategy, answer_hits, check_strategy, exact_match
from alloykit.evaluate.likelihood import choice_accuracy, choice_hits, perplexity
from alloykit.evaluate.tasks import Task, load_task, select

OnProgress = Callable[[str, int, int], None]
TaskLike = Task | str | Path


@dataclass(frozen=True)
class TaskResult:
    """One task's score. ``n`` counts examples, or scored tokens for perplexity."""

    task: str
    type: str
    metric: str
    score: float
    n: int
    split: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate(
    model_or_path,
    tasks: TaskLike | Sequence[TaskLike],
    *,
    split: str = "test",
    limit: int | None = None,
    subset_seed: int | None = None,
    batch_size: int = 64,
    device: str | None = None,
    tokenizer=None,
    on_progress: OnProgress | None = None,
    strategy: Strategy = "forced",
) -> list[TaskResult]:
    """Score ``tasks`` on a model directory, or on a loaded model (with its ``tokenizer``).

    ``limit`` evaluates the first ``limit`` examples (perplexity: windows), or a random subset
    drawn with ``subset_seed``: the same subset every time, a cheap and stable estimate.
    ``device`` defaults to cpu for a path; a loaded model stays where it is unless given one.
    ``on_progress(task, done, total)`` is called after every batch. Every task's data is read
    and checked before the model runs, so bad input fails fast. ``strategy`` is how generation
    tasks are scored (:func:`answer_hits`): the same verdicts either way.
    """
    check_strategy(strategy)
    if isinstance(tasks, (Task, str, Path)):
        tasks = [tasks]
    loaded = [task if isinstance(task, Task) else load_task(task) for task in tasks]
    data = [_task_data(task, split, limit, subset_seed) for task in loaded]
    if isinstance(model_or_path, (str, Path)):
        model, tokenizer = load_model(model_or_path, device or "cpu")
    else:
        model = model_or_path
        if device is not None:
            model.to(_device(device))
        tokenizer = tokenizer if tokenizer is not None else _tokenizer_of(model)
    options = (batch_size, on_progress, limit, subset_seed, strategy)
    return [
        _run_task(model, tokenizer, task, split, items, *options)
        for task, items in zip(loaded, data, strict=True)
    ]


def load_model(path: str | Path, device: str = "cpu"):
    """``(model, tokenizer)`` from a local Hugging Face directory; no downloads, no remote code.

    Half-precision checkpoints run in float32 on CPU, where half-precision matmuls are slow.
    """
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    path = Path(path)
    target = _device(device)
    if not path.is_dir():
        raise CheckpointError(f"model directory {str(path)!r} not found", "give a local model dir")
    if not (path / "config.json").is_file():
        raise CheckpointError(
            f"{path}: no config.json", "give a Hugging Face model directory (save_pretrained)"
        )
    tokenizer = _load_tokenizer(path)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path, local_files_only=True, trust_remote_code=False, **local_load_options()
        )
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(
            f"{path}: cannot load a causal language model ({first_line(exc)})",
            "check the directory holds config.json and its weights",
        ) from None
    if target.type == "cpu" and model.dtype in (torch.float16, torch.bfloat16):
        model = model.float()
    return model.to(target).eval(), tokenizer


def _task_data(task: Task, split: str, limit: int | None, seed: int | None) -> str | list[dict]:
    """The text of a perplexity split, or the selected examples of a JSONL split."""
    if task.type == "perplexity":
        return task.text(split)
    examples = select(task.examples(split), limit, seed)
    if not examples:
        raise AlloyError(f"task {task.name!r}: the {split!r} split has no examples")
    return examples


def _run_task(
    model,
    tokenizer,
    task: Task,
    split: str,
    data: str | list[dict],
    batch_size: int,
    on_progress: OnProgress | None,
    limit: int | None,
    seed: int | None,
    strategy: Strategy,
) -> TaskResult:
    started = time.perf_counter()
    advance = _progress(task.name, on_progress)
    if isinstance(data, str):
        score, n = perplexity(
            model,
            tokenizer,
            data,
            window=task.window,
            stride=task.stride,
            batch_size=batch_size,
            limit=limit,
            seed=seed,
            on_batch=advance,
        )
    elif task.type == "generation":
        n = len(data)
        score = exact_match(
            model,
            tokenizer,
            data,
            max_new_tokens=task.max_new_tokens,
            batch_size=batch_size,
            on_batch=advance,
            strategy=strategy,
        )
    else:
        n = len(data)
        score = choice_accuracy(
            model,
            tokenizer,
            data,
            normalize=task.metric == "acc_norm",
            batch_size=batch_size,
            on_batch=advance,
        )
    seconds = time.perf_counter() - started
    return TaskResult(task.name, task.type, task.metric, score, n, split, seconds)


def item_hits(
    model,
    tokenizer,
    task: Task,
    examples: Sequence[dict],
    *,
    batch_size: int = 64,
    strategy: Strategy = "forced",
) -> list[bool]:
    """Whether the model gets each example of a generation or multiple-choice task right
    (``strategy``: how generation tasks are scored, :func:`answer_hits`)."""
    if task.type == "generation":
        return answer_hits(
            model,
            tokenizer,
            examples,
            max_new_tokens=task.max_new_tokens,
            batch_size=batch_size,
            strategy=strategy,
        )
    if task.type == "multiple_choice":
        normalize = task.metric == "acc_norm"
        return choice_hits(model, tokenizer, examples, normalize=normalize, batch_size=batch_size)
    raise AlloyError(
        f"task {task.name!r}: a {task.type} task has no per-example right or wrong answers",
        "use generation or multiple_choice tasks here",
    )


def item_hits_per_task(
    model,
    tokenizer,
    tasks: Sequence[tuple[Task, Sequence[dict]]],
    *,
    batch_size: int = 64,
    strategy: Strategy = "forced",
) -> list[list[bool]]:
    """:func:`item_hits` of each ``(task, examples)``, in the order given, with the examples of
    all generation tasks scored together, each with its own task's token budget: a few
    examples of each of several tasks then fill a few shared batches instead of costing
    forward passes of their own per task (the fixed cost of a pass dominates on a small model).
    The verdicts are those of scoring each task on its own."""
    check_strategy(strategy)
    hits: list[list[bool]] = [[] for _ in tasks]
    generation = [k for k, (task, _) in enumerate(tasks) if task.type == "generation"]
    for k, (task, examples) in enumerate(tasks):
        if task.type != "generation":
            hits[k] = item_hits(
                model, tokenizer, task, examples, batch_size=batch_size, strategy=strategy
            )
    pooled = [example for k in generation for example in tasks[k][1]]
    if pooled:
        budgets = [tasks[k][0].max_new_tokens for k in generation for _ in tasks[k][1]]
        pooled_hits = answer_hits(
            model,
            tokenizer,
            pooled,
            max_new_tokens=budgets,
            batch_size=batch_size,
            strategy=strategy,
        )
        start = 0
        for k in generation:
            end = start + len(tasks[k][1])
            hits[k] = pooled_hits[start:end]
            start = end
    return hits


def _progress(name: str, on_progress: OnProgress | None) -> Callable[[int, int], None] | None:
    if on_progress is None:
        return None
    done = 0

    def advance(rows: int, total: int) -> None:
        nonlocal done
        done += rows
        on_progress(name, done, total)

    return advance


def _device(name: str) -> torch.device:
    from alloykit.engine.tensors import resolve_device

    return resolve_device(name)


def _load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(
            f"{path}: cannot load a tokenizer ({first_line(exc)})",
            "save the tokenizer next to the model (tokenizer.save_pretrained)",
        ) from None


def _tokenizer_of(model):
    source = getattr(model, "name_or_path", "") or ""
    if not source or not Path(source).is_dir():
        raise AlloyError(
            "evaluate: a loaded model needs its tokenizer", "pass tokenizer=... to evaluate()"
        )
    return _load_tokenizer(Path(source))


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
