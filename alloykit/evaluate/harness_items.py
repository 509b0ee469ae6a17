"""Right or wrong per document of lm-evaluation-harness tasks, on a chosen split: the
responses a recipe search scores (and fits item response theory on) for tasks written in
lm-eval's format.

lm-eval runs each task as its YAML defines it (prompt template, few-shot context, generation
settings, filters, metric) on the live model through its HF wrapper; alloykit only picks the
split and the documents. A task's score per document must be right or wrong: its first metric
(``acc``, ``exact_match``, ...) under its first filter, 0 or 1 for every document.

Optional: ``pip install "alloykit[lm-eval]"``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alloykit.errors import AlloyError
from alloykit.evaluate.lm_eval_bridge import check_task_names, harness_entry_points, task_manager

PREFIX = "lm_eval:"
"""How a search spec names an lm-eval task among its ``tasks:`` (``lm_eval:NAME``)."""


class HarnessTasks:
    """lm-eval tasks by name, each loaded (its dataset read) once per split.

    ``option`` names the setting that asked for them, for error messages."""

    def __init__(self, include_path: str | Path | None, option: str = "tasks") -> None:
        self.option = option
        self.include_path = include_path
        self.simple_evaluate, wrapper_class = harness_entry_points(option)
        self.wrapper_class = _quiet_wrapper(wrapper_class)
        self.manager = task_manager(include_path, option)
        self._loaded: dict[tuple[str, str], Any] = {}

    def task(self, name: str, split: str):
        """The task ``name`` evaluating ``split`` of its dataset."""
        key = (name, split)
        if key not in self._loaded:
            check_task_names(self.manager, [name], self.include_path, self.option)
            with _quiet_lm_eval():
                loaded = self.manager.load([name])["tasks"]
            if name not in loaded:
                members = sorted(loaded)
                raise AlloyError(
                    f"{self.option}: {PREFIX}{name} is a group of {len(members)} lm-eval tasks",
                    f"list the tasks to score one by one, e.g. {PREFIX}{members[0]}"
                    if members
                    else "name one of its tasks",
                )
            task = loaded[name]
            splits = list(task.dataset) if task.dataset is not None else []
            if split not in splits:
                raise AlloyError(
                    f"{self.option}: {PREFIX}{name} has no {split!r} split "
                    f"(it has: {', '.join(splits) or 'none'})",
                    "add it to the task's dataset (data_files), or set the search's split",
                )
            # lm-eval evaluates a task's test split when it has one: point it at ours
            task.config.test_split = split
            self._loaded[key] = task
        return self._loaded[key]

    def size(self, name: str, split: str) -> int:
        """How many documents ``split`` of task ``name`` has (after its ``process_docs``)."""
        return len(self.task(name, split).eval_docs)

    def hits(
        self,
        model,
        tokenizer,
        requests: dict[str, Sequence[int]],
        split: str,
        *,
        batch_size: int = 64,
    ) -> dict[str, list[bool]]:
        """Whether ``model`` gets each requested document right, by task name, in the order
        requested; all tasks run in one ``simple_evaluate`` call."""
        tasks = {name: self.task(name, split) for name in requests}
        # lm-eval labels the documents it runs by the order of ``samples`` but runs them in
        # index order: given in index order, the labels are the indices
        ordered = {name: sorted(set(indices)) for name, indices in requests.items()}
        with _quiet_lm_eval():
            wrapper = self.wrapper_class(
                pretrained=model, tokenizer=_unwrapped(tokenizer), batch_size=batch_size
            )
            output = self.simple_evaluate(
                model=wrapper,
                tasks=list(tasks.values()),
                task_manager=self.manager,  # else it indexes every built-in task: seconds
                samples=ordered,
                log_samples=True,
                bootstrap_iters=0,
            )
        hits = {}
        for name, indices in requests.items():
            by_document = _right_or_wrong(name, tasks[name], output["samples"][name])
            missing = [i for i in indices if i not in by_document]
            if missing:
                raise AlloyError(
                    f"{self.option}: lm-eval returned no result for document {missing[0]} of "
                    f"{PREFIX}{name}",
                    "report this with the lm-eval version: alloykit relies on its samples=",
                )
            hits[name] = [by_document[i] for i in indices]
        return hits


def _right_or_wrong(name: str, task, samples: list[dict]) -> dict[int, bool]:
    """Each document's verdict: its first metric under the first filter, checked to be 0 or 1
    and to belong to the document lm-eval says it does."""
    docs = task.eval_docs
    first_filter = samples[0]["filter"] if samples else None
    verdicts = {}
    for sample in samples:
        if sample["filter"] != first_filter:
            continue
        doc_id = int(sample["doc_id"])
        if dict(docs[doc_id]) != dict(sample["doc"]):
            raise AlloyError(
                f"tasks: lm-eval matched document {doc_id} of {PREFIX}{name} to another one",
                "report this with the lm-eval version: alloykit relies on its samples=",
            )
        metric = sample["metrics"][0]
        value = _right_or_wrong_value(sample[metric])
        if value is None:
            raise AlloyError(
                f"tasks: {PREFIX}{name}'s metric {metric!r} is {sample[metric]!r} on document "
                f"{doc_id}, not right (1) or wrong (0)",
                "a search scores per-document right/wrong metrics such as acc or exact_match",
            )
        verdicts[doc_id] = value
    return verdicts


def _right_or_wrong_value(value: Any) -> bool | None:
    """A per-document score of exactly 0 or 1 (a number of any kind) as a verdict, else None."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number == 1.0 if number in (0.0, 1.0) else None


def _quiet_wrapper(wrapper_class):
    """lm-eval's HF wrapper without its progress bar per request type: a search runs it for
    every candidate, under a progress line of its own."""

    class Quiet(wrapper_class):
        def loglikelihood(self, requests, disable_tqdm: bool = False):
            return super().loglikelihood(requests, disable_tqdm=True)

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
            return super().loglikelihood_rolling(requests, disable_tqdm=True)

        def generate_until(self, requests, disable_tqdm: bool = False):
            return super().generate_until(requests, disable_tqdm=True)

    return Quiet


def _unwrapped(tokenizer):
    """The transformers tokenizer itself (lm-eval's wrapper checks its class), not the search
    worker's :class:`~alloykit.evaluate.remembered.RememberedTokenizer` around it."""
    from alloykit.evaluate.remembered import RememberedTokenizer

    return tokenizer.tokenizer if isinstance(tokenizer, RememberedTokenizer) else tokenizer


@contextmanager
def _quiet_lm_eval() -> Iterator[None]:
    """lm-eval's warnings and its progress bar over a task's documents (which has no switch)
    off while it runs for a candidate, and its logger and module as they were after."""
    import functools
    import logging

    from lm_eval.api import task as task_module

    log = logging.getLogger("lm_eval")
    level, bar = log.level, task_module.tqdm
    log.setLevel(logging.ERROR)
    task_module.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        task_module.tqdm = bar
        log.setLevel(level)
