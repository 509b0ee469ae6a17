"""The default memory budget: a share of the machine's available memory, never below 1 GB; a
budget the caller passes is used as given, and ``--dry-run`` states which one a merge runs
with."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from alloykit import api
from alloykit.api import MergeOptions
from alloykit.cli.app import app
from alloykit.engine import budget
from alloykit.engine.budget import (
    AVAILABLE_FRACTION,
    BUDGET_FLOOR,
    available_memory_bytes,
    default_budget,
)

GB = 10**9


@pytest.fixture
def available_20_gb(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api, "available_memory_bytes", lambda: 20 * GB)


@pytest.fixture
def meminfo(tmp_path, monkeypatch: pytest.MonkeyPatch):
    """A stand-in ``/proc/meminfo``, read afresh (the process-wide reading is restored after)."""
    path = tmp_path / "meminfo"
    monkeypatch.setattr(budget, "MEMINFO", path)
    available_memory_bytes.cache_clear()
    yield path
    available_memory_bytes.cache_clear()


def test_the_default_budget_is_half_the_available_memory() -> None:
    assert AVAILABLE_FRACTION == 0.5
    assert default_budget(20 * GB) == 10 * GB
    assert default_budget(64 * GB + 1) == 32 * GB


def test_the_default_budget_is_never_below_one_gigabyte() -> None:
    assert BUDGET_FLOOR == GB
    assert default_budget(GB) == GB
    assert default_budget(2 * GB + 2) == GB + 1
    assert default_budget(0) == GB


def test_an_unknown_available_memory_gives_the_floor() -> None:
    assert default_budget(None) == GB


def test_merge_options_without_a_budget_take_the_default_of_the_available_memory(
    available_20_gb,
) -> None:
    options = MergeOptions().engine_options()
    assert options.budget_bytes == 10 * GB
    assert options.budget_available == 20 * GB


@pytest.mark.parametrize(
    ("given", "expected"), [("8GB", 8 * GB), ("500MB", 500 * 10**6), (123, 123)]
)
def test_a_given_budget_is_used_exactly_whatever_the_memory(available_20_gb, given, expected):
    options = MergeOptions(memory_budget=given).engine_options()
    assert options.budget_bytes == expected
    assert options.budget_available is None


def test_the_available_memory_is_read_from_meminfo(meminfo) -> None:
    meminfo.write_text("MemTotal:       24000000 kB\nMemAvailable:    2048 kB\n")
    assert available_memory_bytes() == 2048 * 1024


def test_the_available_memory_is_read_once_per_process(meminfo) -> None:
    meminfo.write_text("MemAvailable:    2048 kB\n")
    first = available_memory_bytes()
    meminfo.write_text("MemAvailable:    4096 kB\n")
    assert available_memory_bytes() == first


def test_without_meminfo_the_available_memory_comes_from_sysconf(meminfo, monkeypatch) -> None:
    pages = {"SC_AVPHYS_PAGES": 1000, "SC_PAGE_SIZE": 4096}
    monkeypatch.setattr(budget.os, "sysconf", pages.__getitem__)
    assert available_memory_bytes() == 1000 * 4096


def _write_recipe(tmp_path, llama) -> str:
    recipe = tmp_path / "recipe.yml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "merge_method": "tsv_merge",
                "base_model": str(llama["base"]),
                "models": [{"model": str(llama["ft1"])}, {"model": str(llama["ft2"])}],
            }
        )
    )
    return str(recipe)


def _budget_line(output: str) -> str:
    return next(line for line in output.splitlines() if line.startswith("memory budget"))


def test_the_dry_run_states_the_default_budget_and_where_it_comes_from(
    llama, tmp_path, available_20_gb
) -> None:
    result = CliRunner().invoke(app, ["merge", _write_recipe(tmp_path, llama), "--dry-run"])
    assert result.exit_code == 0, result.output
    line = _budget_line(result.output)
    assert line.startswith("memory budget 10.00 GB (default: 50% of 20.00 GB available")
    assert "--memory-budget" in line


def test_the_dry_run_states_a_given_budget(llama, tmp_path, available_20_gb) -> None:
    arguments = ["merge", _write_recipe(tmp_path, llama), "--dry-run", "--memory-budget", "3GB"]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    assert _budget_line(result.output) == "memory budget 3.00 GB (given)"


def test_merge_help_states_the_default_budget() -> None:
    result = CliRunner().invoke(app, ["merge", "--help"], env={"COLUMNS": "200"})
    assert "half the available memory" in " ".join(result.output.split())
