"""Multi-document recipes (mergekit-multi): merges named and reused by later ones, built in
dependency order, kept between runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner, Result

import alloykit
from alloykit.cli.app import app


def tensors(directory: Path) -> dict[str, torch.Tensor]:
    return {k: v for f in sorted(directory.glob("*.safetensors")) for k, v in load_file(f).items()}


def write(tmp_path: Path, *documents: dict) -> Path:
    path = tmp_path / "multi.yml"
    path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    return path


def run(*arguments: str) -> Result:
    return CliRunner().invoke(app, ["merge", *arguments])


@pytest.fixture
def documents(llama) -> list[dict]:
    """first = linear(ft1, ft2); second = slerp(first → ft3); final = linear(second, base)."""
    return [
        {
            "name": "first",
            "merge_method": "linear",
            "models": [{"model": str(llama["ft1"])}, {"model": str(llama["ft2"])}],
        },
        {
            "name": "second",
            "merge_method": "slerp",
            "base_model": "first",
            "models": [{"model": "first"}, {"model": str(llama["ft3"])}],
            "parameters": {"t": 0.3},
        },
        {
            "merge_method": "linear",
            "models": [
                {"model": "second", "parameters": {"weight": 0.6}},
                {"model": str(llama["base"]), "parameters": {"weight": 0.4}},
            ],
        },
    ]


def test_each_merge_equals_running_the_documents_one_by_one(documents, tmp_path):
    out = tmp_path / "out"
    result = run(str(write(tmp_path, *documents)), str(out))
    assert result.exit_code == 0, result.output
    by_hand = tmp_path / "by-hand"
    first = alloykit.merge({k: v for k, v in documents[0].items() if k != "name"}, by_hand / "1")
    second_recipe = {k: v for k, v in documents[1].items() if k != "name"}
    second_recipe["base_model"] = str(first)
    second_recipe["models"] = [{"model": str(first)}, documents[1]["models"][1]]
    second = alloykit.merge(second_recipe, by_hand / "2")
    final_recipe = dict(documents[2])
    final_recipe["models"] = [
        {**documents[2]["models"][0], "model": str(second)},
        documents[2]["models"][1],
    ]
    final = alloykit.merge(final_recipe, by_hand / "3")
    intermediate = tmp_path / "out.intermediate"
    for built, expected in [
        (intermediate / "first", first),
        (intermediate / "second", second),
        (out, final),
    ]:
        got, want = tensors(built), tensors(expected)
        assert got.keys() == want.keys()
        assert all(torch.equal(got[name], want[name]) for name in want)


def test_documents_run_in_dependency_order_whatever_their_order(documents, tmp_path):
    result = run(
        str(write(tmp_path, documents[2], documents[1], documents[0])), str(tmp_path / "out")
    )
    assert result.exit_code == 0, result.output
    order = [line for line in result.stdout.splitlines() if line.startswith("merging")]
    assert [line.split()[2] for line in order] == ["3", "2", "1"]
    assert "(first)" in order[0] and "(second)" in order[1] and "(final)" in order[2]


def test_a_rerun_keeps_built_merges_and_no_lazy_rebuilds_them(documents, tmp_path):
    recipe = write(tmp_path, *documents)
    assert run(str(recipe), str(tmp_path / "out")).exit_code == 0
    first = tmp_path / "out.intermediate" / "first"
    stamp = (first / "config.json").stat().st_mtime_ns
    again = run(str(recipe), str(tmp_path / "out"), "--force")
    assert again.exit_code == 0, again.output
    assert again.stdout.count("kept ") == 2
    assert (first / "config.json").stat().st_mtime_ns == stamp
    rebuilt = run(str(recipe), str(tmp_path / "out"), "--force", "--no-lazy")
    assert rebuilt.exit_code == 0, rebuilt.output
    assert "kept " not in rebuilt.stdout
    assert (first / "config.json").stat().st_mtime_ns != stamp


def test_a_failed_later_merge_keeps_the_earlier_ones_for_the_next_run(documents, tmp_path):
    broken = [*documents[:2], {**documents[2], "merge_method": "lineer"}]
    failed = run(str(write(tmp_path, *broken)), str(tmp_path / "out"))
    assert failed.exit_code == 2
    assert "document 3 (final)" in failed.stderr and "lineer" in failed.stderr
    assert (tmp_path / "out.intermediate" / "second" / "config.json").is_file()
    fixed = run(str(write(tmp_path, *documents)), str(tmp_path / "out"))
    assert fixed.exit_code == 0, fixed.output
    assert fixed.stdout.count("kept ") == 2


def test_when_every_merge_is_named_they_are_written_under_out(documents, tmp_path):
    named = [*documents[:2], {**documents[2], "name": "third"}]
    result = run(str(write(tmp_path, *named)), str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["first", "second", "third"]


def test_intermediate_dir_sets_where_named_merges_go(documents, tmp_path):
    cache = tmp_path / "cache"
    result = run(str(write(tmp_path, *documents)), str(tmp_path / "out"), "-I", str(cache))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in cache.iterdir()) == ["first", "second"]


def test_dry_run_shows_each_merge_and_waits_for_unbuilt_inputs(documents, tmp_path):
    result = run(str(write(tmp_path, *documents)), str(tmp_path / "out"), "--dry-run")
    assert result.exit_code == 0, result.output
    assert "merge 1/3" in result.stdout and "merge 3/3" in result.stdout
    assert "output tensors" in result.stdout
    assert "planned once first is built" in result.stdout
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: [d[0], {**d[1], "name": "first"}, d[2]], "name 'first' is used twice"),
        (lambda d: [d[0], {k: v for k, v in d[1].items() if k != "name"}, d[2]], "unnamed"),
        (
            lambda d: [
                {**d[0], "base_model": "second", "models": [{"model": "second"}]},
                d[1],
                d[2],
            ],
            "cycle",
        ),
        (lambda d: [{**d[0], "name": "../up"}, d[1], d[2]], "directory-safe name"),
    ],
)
def test_bad_multi_document_recipes_are_refused(documents, tmp_path, change, message):
    result = run(str(write(tmp_path, *change(documents))), str(tmp_path / "out"))
    assert result.exit_code == 2
    assert message in result.stderr


def test_a_final_merge_needs_out(documents, tmp_path):
    result = run(str(write(tmp_path, *documents)))
    assert result.exit_code == 2
    assert "missing OUT" in result.stderr
