"""A model's fingerprint follows its tensors' bytes, names, shapes and dtypes, nothing else."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from alloykit.calibrate import StatisticsError, check_model, fingerprint, read_info
from alloykit.calibrate.statistics_file import metadata, write_statistics


def copy_with(zoo_base: Path, directory: Path, change=None) -> Path:
    shutil.copytree(zoo_base, directory)
    if change is not None:
        tensors = load_file(str(directory / "model.safetensors"))
        change(tensors)
        save_file(tensors, str(directory / "model.safetensors"))
    return directory


def test_a_copy_has_the_same_fingerprint(tmp_path, zoo_base) -> None:
    assert fingerprint(copy_with(zoo_base, tmp_path / "copy")) == fingerprint(zoo_base)


def test_one_changed_value_changes_the_fingerprint(tmp_path, zoo_base) -> None:
    def nudge(tensors: dict[str, torch.Tensor]) -> None:
        tensors["model.norm.weight"][0] += 1e-3

    assert fingerprint(copy_with(zoo_base, tmp_path / "nudged", nudge)) != fingerprint(zoo_base)


def test_statistics_of_another_model_are_refused(tmp_path, zoo_base) -> None:
    path = write_statistics(
        tmp_path / "s.safetensors",
        {"fisher:x": torch.zeros(2)},
        metadata(fingerprint="0" * 64, kinds=("fisher",), samples=1, tokens=3, data="d", seed=0),
    )
    with pytest.raises(StatisticsError, match="computed for another model than zoo/base"):
        check_model(read_info(path), "zoo/base", fingerprint(zoo_base))
