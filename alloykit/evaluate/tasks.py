"""Task definitions users write themselves: a ``task.yaml`` next to local data files.

A task is one of three kinds, each scored one way:

- ``generation``: JSONL lines ``{"prompt", "answer"}``; exact match of the greedy answer.
- ``multiple_choice``: JSONL lines ``{"prompt", "choices": [...], "answer": index}``; accuracy
  of the choice with the highest log-likelihood (``acc``) or per-character log-likelihood
  (``acc_norm``).
- ``perplexity``: a text file; token-level perplexity over sliding windows.

A directory of ``{train,validation,test}.jsonl`` without a ``task.yaml`` is a generation task.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from alloykit.errors import AlloyError

TASK_FILE = "task.yaml"
SPLITS = ("train", "validation", "test")
METRICS = {
    "generation": ("exact_match",),
    "multiple_choice": ("acc", "acc_norm"),
    "perplexity": ("perplexity",),
}
DEFAULT_MAX_NEW_TOKENS = 32


class TaskError(AlloyError):
    """A task definition or its data cannot be used."""


class _TaskSchema(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    type: Literal["generation", "multiple_choice", "perplexity"] = "generation"
    data: dict[str, str] | None = None
    metric: str | None = None
    max_new_tokens: int = Field(DEFAULT_MAX_NEW_TOKENS, ge=1)
    window: int | None = Field(None, ge=2)
    stride: int | None = Field(None, ge=1)
    description: str | None = None


@dataclass(frozen=True)
class Task:
    """A validated task: where its splits are and how to score them."""

    name: str
    type: str
    splits: dict[str, Path]
    metric: str
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    window: int | None = None
    stride: int | None = None
    source: Path | None = field(default=None, compare=False)

    def split_path(self, split: str) -> Path:
        if split not in self.splits:
            known = ", ".join(sorted(self.splits)) or "none"
            raise TaskError(
                f"task {self.name!r} has no {split!r} split (it has: {known})",
                "pick another --split, or add it under data: in task.yaml",
            )
        return self.splits[split]

    def examples(self, split: str) -> list[dict[str, Any]]:
        """The examples of a JSONL split, each checked against the task type."""
        path = self.split_path(split)
        if self.type == "perplexity":
            raise TaskError(f"task {self.name!r} is a perplexity task: its data is text, not JSONL")
        return [_checked(self.type, path, number, line) for number, line in _jsonl_lines(path)]

    def text(self, split: str) -> str:
        """The text of a perplexity split."""
        path = self.split_path(split)
        try:
            return path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise TaskError(f"{path}: cannot read the text ({exc})") from None


def load_task(path: str | Path) -> Task:
    """A task from ``task.yaml``, a directory holding one, or a directory of JSONL splits."""
    path = Path(path)
    if path.is_dir():
        yaml_path = path / TASK_FILE
        if yaml_path.is_file():
            return _from_yaml(yaml_path)
        return _from_directory(path)
    if path.is_file():
        return _from_yaml(path)
    raise TaskError(
        f"task {str(path)!r} not found",
        "give a task.yaml, a directory holding one, or a directory of JSONL splits",
    )


def select(items: list, limit: int | None, seed: int | None = None) -> list:
    """A deterministic subset: the first ``limit`` items, or a seeded random ``limit`` of them.

    A random subset keeps the items' original order, and is the same for the same seed.
    """
    if limit is not None and limit < 1:
        raise TaskError(f"--limit must be at least 1, got {limit}")
    if limit is None or limit >= len(items):
        return list(items)
    if seed is None:
        return list(items[:limit])
    chosen = sorted(random.Random(seed).sample(range(len(items)), limit))
    return [items[index] for index in chosen]


def _jsonl_splits(directory: Path) -> dict[str, Path]:
    splits = {split: directory / f"{split}.jsonl" for split in SPLITS}
    return {split: path for split, path in splits.items() if path.is_file()}


def _from_directory(directory: Path) -> Task:
    splits = _jsonl_splits(directory)
    if not splits:
        raise TaskError(
            f"{directory}: no {TASK_FILE} and no train/validation/test .jsonl files",
            f"add {TASK_FILE} or JSONL splits named train.jsonl, validation.jsonl, test.jsonl",
        )
    return Task(
        name=directory.resolve().name,
        type="generation",
        splits=splits,
        metric="exact_match",
        source=directory,
    )


def _from_yaml(path: Path) -> Task:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise TaskError(f"{path}: cannot read the task file ({exc})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise TaskError(f"{path}{where}: {problem}", "check the YAML syntax") from None
    if not isinstance(raw, dict):
        raise TaskError(
            f"{path}: a task file must be a mapping", "e.g. {name: x, type: generation}"
        )
    try:
        schema = _TaskSchema.model_validate(raw)
    except ValidationError as exc:
        raise _schema_error(path, exc) from None
    directory = path.parent
    name = schema.name or directory.resolve().name
    metric = schema.metric or METRICS[schema.type][0]
    if metric not in METRICS[schema.type]:
        allowed = " or ".join(METRICS[schema.type])
        raise TaskError(
            f"{path}: metric {metric!r} does not fit a {schema.type} task", f"use {allowed}"
        )
    if schema.data is None:
        if schema.type == "perplexity":
            raise TaskError(f"{path}: a perplexity task needs data:", "e.g. data: {test: test.txt}")
        splits = _jsonl_splits(directory)
        if not splits:
            raise TaskError(
                f"{path}: no data: and no train/validation/test .jsonl beside it",
                "add data: {test: FILE.jsonl}",
            )
    else:
        splits = {split: directory / relative for split, relative in schema.data.items()}
    for split, data_path in splits.items():
        if not data_path.is_file():
            raise TaskError(
                f"{path}: data.{split}: file {str(data_path)!r} not found",
                "paths under data: are relative to the task file",
            )
    return Task(
        name=name,
        type=schema.type,
        splits=splits,
        metric=metric,
        max_new_tokens=schema.max_new_tokens,
        window=schema.window,
        stride=schema.stride,
        source=path,
    )


def _schema_error(path: Path, exc: ValidationError) -> TaskError:
    error = exc.errors()[0]
    key = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        allowed = ", ".join(_TaskSchema.model_fields)
        return TaskError(f"{path}: unknown key {key!r}", f"allowed keys: {allowed}")
    return TaskError(f"{path}: {key}: {error['msg']}")


def _jsonl_lines(path: Path):
    try:
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, start=1):
                if line.strip():
                    yield number, line
    except UnicodeDecodeError:
        raise TaskError(f"{path}: not UTF-8 text", "JSONL files must be UTF-8") from None
    except OSError as exc:
        raise TaskError(f"{path}: cannot read ({exc.strerror})") from None


def _checked(task_type: str, path: Path, number: int, line: str) -> dict[str, Any]:
    where = f"{path}:{number}"
    try:
        example = json.loads(line)
    except json.JSONDecodeError as exc:
        raise TaskError(
            f"{where}: malformed JSON ({exc.msg})", "one JSON object per line"
        ) from None
    if not isinstance(example, dict) or not isinstance(example.get("prompt"), str):
        raise TaskError(f"{where}: expected an object with a string 'prompt'")
    if "answer" not in example:
        raise TaskError(f"{where}: missing 'answer'")
    if task_type == "generation":
        if not isinstance(example["answer"], (str, int, float)):
            raise TaskError(f"{where}: 'answer' must be a string")
        return example
    choices = example.get("choices")
    if not isinstance(choices, list) or len(choices) < 2:
        raise TaskError(f"{where}: 'choices' must be a list of at least two strings")
    if not all(isinstance(choice, str) and choice for choice in choices):
        raise TaskError(f"{where}: every choice must be a non-empty string")
    answer = example["answer"]
    if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(choices):
        raise TaskError(
            f"{where}: 'answer' must be the index of the right choice (0 to {len(choices) - 1})"
        )
    return example
