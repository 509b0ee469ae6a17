"""A candidate's fitness: its accuracy on each task's validation split, measured on every
example (``full``), on a fixed random subset (``subset``), or on a subset chosen by item
response theory and extrapolated (``irt``, :mod:`alloykit.search.irt`).

The driver decides which examples a candidate runs (:meth:`Fitness.requests`); workers answer
with one right/wrong per example; :meth:`Fitness.scores` turns those into estimated accuracies.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np

from alloykit.evaluate.harness_items import PREFIX, HarnessTasks
from alloykit.evaluate.tasks import Task, load_task
from alloykit.search.irt import Estimator
from alloykit.search.spec import SearchSpec, SpecError

Requests = dict[str, list[int]]
"""Example indices to run, by task name."""
Responses = dict[str, list[bool]]
"""Right or wrong for each requested example, by task name, in the requested order."""
HARNESS_TASK = "lm-eval"
"""The type of a task that lm-eval runs (``lm_eval:NAME`` in the spec)."""


@dataclass
class TaskSplit:
    task: Task
    examples: list[dict]
    run: list[int] = field(default_factory=list)
    estimator: Estimator | None = None


class Fitness:
    """The tasks of a spec and how a candidate's answers become scores."""

    def __init__(self, spec: SearchSpec) -> None:
        self.spec = spec
        self.estimator = spec.fitness.estimator
        self.tasks: dict[str, TaskSplit] = {}
        self._harness: HarnessTasks | None = None
        for raw in spec.tasks:
            task, examples = self._task(raw)
            if task.name in self.tasks:
                raise SpecError(f"tasks: {task.name!r} is listed twice")
            if spec.fitness.limit is not None:
                examples = examples[: spec.fitness.limit]
            if not examples:
                raise SpecError(f"tasks: {task.name!r} has no {spec.fitness.split!r} examples")
            self.tasks[task.name] = TaskSplit(task, examples, list(range(len(examples))))
        if self.estimator == "subset":
            for name, split in self.tasks.items():
                size = self.subset_size(split)
                rng = random.Random(f"{spec.seed}:{name}")
                split.run = sorted(rng.sample(range(len(split.examples)), size))

    def _task(self, raw: str) -> tuple[Task, list[dict]]:
        """The task a ``tasks:`` entry names and its examples of the split; an lm-eval task's
        examples are its documents' indices (lm-eval reads the documents themselves)."""
        split = self.spec.fitness.split
        if raw.startswith(PREFIX):
            name = raw.removeprefix(PREFIX)
            size = self.harness.size(name, split)
            return Task(name, HARNESS_TASK, {}, "lm-eval"), [{"document": i} for i in range(size)]
        task = load_task(self.spec.path(raw))
        if task.type not in ("generation", "multiple_choice"):
            raise SpecError(
                f"tasks: {task.name!r} is a {task.type} task",
                "search scores generation or multiple_choice tasks",
            )
        return task, task.examples(split)

    @property
    def harness(self) -> HarnessTasks:
        """The spec's lm-eval tasks (loaded when the first is asked for)."""
        if self._harness is None:
            include = self.spec.lm_eval_include
            path = self.spec.path(include) if include is not None else None
            self._harness = HarnessTasks(path, "tasks")
        return self._harness

    @property
    def needs_anchors(self) -> bool:
        """Whether the endpoints' full responses are needed first (to fit the IRT items)."""
        return self.estimator == "irt"

    def subset_size(self, split: TaskSplit) -> int:
        return max(1, round(self.spec.fitness.subset * len(split.examples)))

    def full_requests(self) -> Requests:
        return {name: list(range(len(split.examples))) for name, split in self.tasks.items()}

    def requests(self) -> Requests:
        return {name: list(split.run) for name, split in self.tasks.items()}

    def fit_anchors(self, anchors: dict[str, Responses]) -> None:
        """Fit each task's IRT estimator on the endpoints' full responses
        (``anchors[model][task]``) and choose the examples candidates will run."""
        for name, split in self.tasks.items():
            matrix = np.array([responses[name] for responses in anchors.values()], dtype=float)
            split.estimator = Estimator.fit(matrix, self.subset_size(split))
            split.run = [int(i) for i in split.estimator.index]

    def scores(self, responses: Responses) -> dict[str, float]:
        """Estimated accuracy per task from the answers to :meth:`requests`."""
        scores = {}
        for name, split in self.tasks.items():
            right = np.asarray(responses[name], dtype=float)
            if split.estimator is not None and len(right) != len(split.examples):
                scores[name] = split.estimator.estimate(right)
            else:
                scores[name] = float(right.mean())
        return scores

    def objectives(self, scores: dict[str, float]) -> list[float]:
        """What the optimizer maximizes: the mean accuracy, or one accuracy per task."""
        if self.spec.objective == "per_task":
            return [scores[name] for name in self.tasks]
        return [sum(scores.values()) / len(scores)]
