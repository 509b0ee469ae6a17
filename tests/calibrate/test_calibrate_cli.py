"""``alloykit calibrate``: writes the statistics file; bad input is one line and exit 2."""

from __future__ import annotations

from typer.testing import CliRunner

from alloykit.calibrate import read_info
from alloykit.cli.app import app


def test_calibrate_writes_the_statistics_file(tmp_path, zoo_base, zoo_task) -> None:
    out = tmp_path / "stats.safetensors"
    result = CliRunner().invoke(
        app,
        [
            *("calibrate", str(zoo_base), "--data", str(zoo_task), "--out", str(out)),
            *("--samples", "4", "--kinds", "gram", "--threads", "1"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert f"wrote {out} (gram; 4 examples" in result.output
    assert read_info(out).kinds == ("gram",)


def test_missing_data_exits_2_with_one_line(tmp_path, zoo_base) -> None:
    result = CliRunner().invoke(
        app,
        [
            *("calibrate", str(zoo_base), "--data", str(tmp_path / "nope.jsonl")),
            *("--out", str(tmp_path / "s.safetensors")),
        ],
    )
    assert result.exit_code == 2
    assert "calibration data" in result.output and "not found" in result.output
    assert "Traceback" not in result.output
