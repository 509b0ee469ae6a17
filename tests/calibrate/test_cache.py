"""Statistics for a recipe's data: computed once per (model, data, settings), then reused."""

from __future__ import annotations

import json

import pytest

from alloykit.calibrate import CalibrationSettings, read_info, statistics_for
from alloykit.calibrate import cache as cache_module


@pytest.fixture
def cache_root(tmp_path, monkeypatch):
    monkeypatch.setenv("ALLOYKIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "statistics"


def texts(path, rows):
    path.write_text("".join(json.dumps({"text": row}) + "\n" for row in rows))
    return path


def test_statistics_are_calibrated_once_then_read_from_the_cache(
    tmp_path, cache_root, zoo_base, monkeypatch
) -> None:
    data = texts(tmp_path / "d.jsonl", ["sort: 1 2 = 1 2", "sort: 2 1 = 1 2"])
    settings = CalibrationSettings(kinds=("gram",), samples=2)
    first = statistics_for(zoo_base, data, settings)
    assert first.parent == cache_root
    assert read_info(first).samples == 2

    def refuse(*args, **kwargs):
        raise AssertionError("calibrated again")

    monkeypatch.setattr(cache_module, "calibrate", refuse)
    assert statistics_for(zoo_base, data, settings) == first


def test_changed_data_or_settings_are_calibrated_anew(tmp_path, cache_root, zoo_base) -> None:
    data = texts(tmp_path / "d.jsonl", ["sort: 1 2 = 1 2"])
    settings = CalibrationSettings(kinds=("gram",), samples=1)
    first = statistics_for(zoo_base, data, settings)
    assert statistics_for(zoo_base, data, CalibrationSettings(kinds=("gram",), seed=1)) != first
    texts(data, ["sort: 2 1 = 1 2"])
    assert statistics_for(zoo_base, data, settings) != first
