"""The trial journal: written line by line, replayed on resume, refused for another spec."""

from __future__ import annotations

from pathlib import Path

import pytest

from alloykit.search.journal import Journal, Trial
from alloykit.search.spec import SpecError


def trial(index: int) -> Trial:
    return Trial(index, {"w": 0.5 + index}, {"t": 0.25}, [0.25], 0.25, 1.0, "full")


def test_trials_come_back_after_a_restart(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "trials.jsonl", "abc")
    journal.record(trial(1))
    journal.record(trial(0))
    again = Journal(tmp_path / "trials.jsonl", "abc")
    assert again.ordered() == [trial(0), trial(1)]


def test_a_line_cut_short_by_a_kill_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "trials.jsonl"
    journal = Journal(path, "abc")
    journal.record(trial(0))
    with path.open("a") as file:
        file.write('{"trial": 1, "point": {"w"')
    again = Journal(path, "abc")
    assert list(again.trials) == [0]
    again.record(trial(1))
    assert list(Journal(path, "abc").trials) == [0, 1]


def test_trials_of_another_spec_are_refused(tmp_path: Path) -> None:
    Journal(tmp_path / "trials.jsonl", "abc").record(trial(0))
    with pytest.raises(SpecError, match="belong to another search spec"):
        Journal(tmp_path / "trials.jsonl", "xyz")
