"""``OUT/trials.jsonl``: every evaluated candidate, written before the next is asked for.

The first line names the spec the trials belong to; each further line is one trial. A line is
flushed and synced to disk as soon as its candidate is scored, so a search stopped at any
moment (Ctrl-C, kill -9) loses at most the candidates being evaluated; rerun, it replays the
recorded trials into its optimizer and evaluates only what is missing. A last line cut short by
the kill is ignored.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from alloykit.search.spec import SpecError

VERSION = 1


@dataclass(frozen=True)
class Trial:
    """One scored candidate."""

    trial: int
    point: dict[str, Any]
    scores: dict[str, float]
    objectives: list[float]
    fitness: float
    seconds: float
    estimator: str


class Journal:
    def __init__(self, path: Path, fingerprint: str) -> None:
        self.path = path
        self.fingerprint = fingerprint
        self.trials: dict[int, Trial] = {}
        if path.exists():
            self._read()
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._append({"spec": fingerprint, "version": VERSION})

    def _read(self) -> None:
        lines = self.path.read_text().splitlines()
        header = _parsed(lines[0]) if lines else None
        if header is None or header.get("spec") != self.fingerprint:
            raise SpecError(
                f"{self.path}: these trials belong to another search spec",
                "give the search another output directory, or delete its trials.jsonl",
            )
        for line in lines[1:]:
            record = _parsed(line)
            if record is not None:  # a line cut short by a kill is skipped
                trial = Trial(**record)
                self.trials[trial.trial] = trial
        if lines and not self.path.read_text().endswith("\n"):
            with self.path.open("a") as file:  # the next record starts on a line of its own
                file.write("\n")

    def record(self, trial: Trial) -> None:
        self.trials[trial.trial] = trial
        self._append(asdict(trial))

    def _append(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as file:
            file.write(json.dumps(record, sort_keys=True) + "\n")
            file.flush()
            os.fsync(file.fileno())

    def ordered(self) -> list[Trial]:
        return [self.trials[i] for i in sorted(self.trials)]


def _parsed(line: str) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None
