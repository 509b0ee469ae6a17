"""benchmarks/quality.py runs end to end in smoke mode on a tiny zoo."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import quality


def test_quality_benchmark_smoke_run_reports_every_row(quick_zoo, capsys):
    assert (
        quality.main(
            [
                "--zoo",
                str(quick_zoo),
                "--smoke",
                "--subsets",
                "2",
                "--val-limit",
                "4",
                "--test-limit",
                "4",
            ]
        )
        == 0
    )
    output = capsys.readouterr().out
    for row in ("| base |", "best single expert", "| linear | 2 |", "| ties | 2 |"):
        assert row in output
