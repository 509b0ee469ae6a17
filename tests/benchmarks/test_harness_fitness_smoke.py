"""benchmarks/harness_fitness.py scores the same zoo candidates through lm-eval and through
alloykit's own tasks, and every verdict agrees."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("lm_eval", reason="the lm-eval extra is not installed")
pytest.importorskip("optuna", reason="the search extra is not installed")

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import harness_fitness


def test_lm_eval_and_alloykit_agree_on_every_verdict(capsys, monkeypatch) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    assert harness_fitness.main(["--candidates", "1", "--subset", "0.05"]) == 0
    output = capsys.readouterr().out
    result = json.loads(output[: output.rindex("}") + 1])
    assert result["examples_per_candidate"] == 80  # 10 of each task's 200 validation examples
    assert result["verdicts_agreeing"] == result["verdicts"] == 80
