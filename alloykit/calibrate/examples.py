"""Calibration examples: what the model reads, and which part of it is scored.

Data is a task (a directory or ``task.yaml`` as :func:`alloykit.evaluate.load_task` reads; its
train split, so calibration never sees what a merge is scored on) or a JSONL file of
``{"prompt"}``, ``{"prompt", "answer"}`` or ``{"text"}`` lines. An example is a ``context``
(read, not scored) and a ``target`` whose log-likelihood the Fisher statistics differentiate:
a task's answer, or the whole text of a line without one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from alloykit.errors import AlloyError
from alloykit.evaluate.tasks import Task, load_task, select


class CalibrationDataError(AlloyError):
    """Calibration data is missing, empty or not in a format calibration reads."""


@dataclass(frozen=True)
class Example:
    """One calibration sequence: ``context + target``, with the likelihood on ``target``."""

    context: str
    target: str


@dataclass(frozen=True)
class CalibrationData:
    """The chosen examples, the files they came from and a description for metadata."""

    examples: list[Example]
    files: tuple[Path, ...]
    description: str


def load_examples(data: str | Path, samples: int, seed: int) -> CalibrationData:
    """Up to ``samples`` examples of ``data``, a seeded random subset (same seed, same subset)."""
    path = Path(data)
    if not path.exists():
        raise CalibrationDataError(
            f"calibration data {str(path)!r} not found",
            'give a task directory, a task.yaml or a JSONL of {"prompt"} / {"text"} lines',
        )
    if samples < 1:
        raise CalibrationDataError(f"samples must be at least 1, got {samples}")
    if path.is_file() and path.suffix == ".jsonl":
        examples, files = _from_jsonl(path), (path,)
        description = path.name
    else:
        task = load_task(path)
        examples, files = _from_task(task), (task.split_path("train"),)
        description = f"task {task.name} (train)"
    if not examples:
        raise CalibrationDataError(
            f"calibration data {str(files[0])!r} holds no examples", "add at least one line"
        )
    chosen = select(examples, samples, seed)
    return CalibrationData(chosen, files, f"{description}, {len(chosen)} of {len(examples)}")


def content_hash(files: tuple[Path, ...]) -> str:
    """SHA-256 of the bytes of ``files``, in order: the data part of a statistics cache key."""
    digest = hashlib.sha256()
    for path in files:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _answer_target(context: str, answer: str) -> str:
    """The answer as it follows the prompt: after one space unless either side has one."""
    if not context or context[-1].isspace() or answer[:1].isspace():
        return answer
    return " " + answer


def _from_task(task: Task) -> list[Example]:
    if task.type == "perplexity":
        raise CalibrationDataError(
            f"task {task.name!r} is a perplexity task: calibration reads JSONL examples",
            'give a JSONL of {"text"} lines instead',
        )
    examples = []
    for item in task.examples("train"):
        if task.type == "multiple_choice":
            answer = item["choices"][item["answer"]]
        else:
            answer = item["answer"]
        examples.append(Example(item["prompt"], _answer_target(item["prompt"], str(answer))))
    return examples


def _from_jsonl(path: Path) -> list[Example]:
    examples = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CalibrationDataError(f"{path}: cannot read the file ({exc})") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CalibrationDataError(f"{path}:{number}: not JSON ({exc.msg})") from None
        examples.append(_example(path, number, item))
    return examples


def _example(path: Path, number: int, item: object) -> Example:
    if isinstance(item, dict):
        text, prompt, answer = item.get("text"), item.get("prompt"), item.get("answer")
        if isinstance(text, str) and text:
            return Example("", text)
        if isinstance(prompt, str) and prompt:
            if answer is None:
                return Example("", prompt)
            return Example(prompt, _answer_target(prompt, str(answer)))
    raise CalibrationDataError(
        f'{path}:{number}: expected {{"text": ...}} or {{"prompt": ...}} with a non-empty string',
        'one JSON object per line, e.g. {"prompt": "2 + 2 =", "answer": "4"}',
    )
