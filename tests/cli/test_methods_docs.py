"""The method catalog page is generated from the registry and kept in sync."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from alloykit.cli import app
from alloykit.cli.render import methods_markdown
from alloykit.methods import all_methods

DOCS = Path(__file__).resolve().parents[2] / "docs" / "methods.md"


def test_docs_methods_page_matches_the_registry():
    stale = "docs/methods.md is stale: run `alloykit methods --markdown > docs/methods.md`"
    assert DOCS.read_text() == methods_markdown(all_methods()), stale


def test_methods_command_lists_every_method():
    result = CliRunner().invoke(app, ["methods"], terminal_width=200)
    assert result.exit_code == 0
    for method in all_methods():
        assert method.name in result.output


def test_methods_command_describes_one_method_with_ranges_and_reference():
    result = CliRunner().invoke(app, ["methods", "ties"], terminal_width=200)
    assert result.exit_code == 0
    assert "density" in result.output
    assert "arXiv:2306.01708" in result.output


def test_unknown_method_name_suggests_the_closest():
    result = CliRunner().invoke(app, ["methods", "tise"])
    assert result.exit_code == 2
    assert "ties" in result.stderr
