"""The driver commands write loadable model directories whose cards record the choice."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from alloykit.cli.app import app


@pytest.fixture(scope="module")
def zoo(zoo_base):
    return zoo_base.parent


def invoke(*args: str):
    return CliRunner().invoke(app, [*args, "--threads", "1"])


def test_greedy_soup_writes_the_soup_and_its_choices(zoo, tmp_path) -> None:
    out = tmp_path / "soup"
    result = invoke(
        "greedy-soup", str(out),
        "--model", str(zoo / "experts" / "sort"), "--model", str(zoo / "experts" / "lower"),
        "--task", str(zoo / "tasks" / "sort"), "--limit", "4",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    card = (out / "README.md").read_text()
    assert "## Greedy soup" in card and str(zoo / "experts" / "sort") in card


def test_adamerging_writes_its_coefficients_in_the_card(zoo, tmp_path) -> None:
    out = tmp_path / "ada"
    result = invoke(
        "adamerging", str(out), "--base", str(zoo / "base"),
        "--model", str(zoo / "experts" / "sort"), "--data", str(zoo / "tasks" / "sort"),
        "--granularity", "task", "--steps", "2", "--samples", "4", "--batch-size", "2",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "| (all tensors) |" in (out / "README.md").read_text()


def test_regmean_pp_needs_one_data_set_per_model(zoo, tmp_path) -> None:
    result = invoke(
        "regmean-pp", str(tmp_path / "rpp"),
        "--model", str(zoo / "experts" / "sort"), "--model", str(zoo / "experts" / "lower"),
        "--data", str(zoo / "tasks" / "sort"),
    )  # fmt: skip
    assert result.exit_code == 2
    assert "2 models but 1 data sets" in result.output
