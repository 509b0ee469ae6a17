"""Evaluate models on local tasks: generation exact match, multiple choice, perplexity.

``evaluate(model_or_path, tasks)`` scores task definitions (:func:`load_task`) on a model;
``exact_match`` / ``answer_hits`` score generation tasks (by teacher forcing, or by
``generate_answers``); they are the batched building blocks for generation tasks.
``item_hits_per_task`` gives per-example right/wrong for several tasks at once (the examples
of all generation tasks share batches), as a recipe search scores a candidate.
"""

from __future__ import annotations

from alloykit.evaluate.answers import STRATEGIES, Strategy, answer_hits, exact_match
from alloykit.evaluate.forced import forced_verdicts
from alloykit.evaluate.generation import generate_answers
from alloykit.evaluate.likelihood import choice_accuracy, choice_hits, choice_scores, perplexity
from alloykit.evaluate.runner import (
    TaskResult,
    evaluate,
    item_hits,
    item_hits_per_task,
    load_model,
)
from alloykit.evaluate.tasks import Task, TaskError, load_task, select

__all__ = [
    "STRATEGIES",
    "Strategy",
    "Task",
    "TaskError",
    "TaskResult",
    "answer_hits",
    "choice_accuracy",
    "choice_hits",
    "choice_scores",
    "evaluate",
    "exact_match",
    "forced_verdicts",
    "generate_answers",
    "item_hits",
    "item_hits_per_task",
    "load_model",
    "load_task",
    "perplexity",
    "select",
]
