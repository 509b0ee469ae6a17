"""A tiny model family that can be scored (character tokenizer) and two multiple-choice tasks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True, scope="package")
def single_thread() -> Iterator[None]:
    """Tiny models gain nothing from intra-op threads, and on a busy machine they lose a lot."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


@pytest.fixture(scope="session")
def search_family(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """base, ft1, ft2 (tiny llamas with a character tokenizer each) and tasks/plus, tasks/minus."""
    from alloykit.tiny_models import build_char_tokenizer, build_family

    root = tmp_path_factory.mktemp("search-family")
    family = build_family("llama", root, finetunes=2, seed=5)
    for directory in family.values():
        build_char_tokenizer(directory)
    for name, sign in (("plus", 1), ("minus", -1)):
        rows = [
            {
                "prompt": f"{i} {'+' if sign > 0 else '-'} 1 =",
                "choices": [f" {i + sign}", f" {i + 2 * sign}", f" {i}"],
                "answer": i % 3,
            }
            for i in range(40)
        ]
        _write_jsonl(root / "tasks" / name / "validation.jsonl", rows[:30])
        _write_jsonl(root / "tasks" / name / "test.jsonl", rows[30:])
        (root / "tasks" / name / "task.yaml").write_text(
            f"name: {name}\ntype: multiple_choice\n"
            "data: {validation: validation.jsonl, test: test.jsonl}\n"
        )
    return {**family, "plus": root / "tasks" / "plus", "minus": root / "tasks" / "minus"}


@pytest.fixture()
def spec_of(search_family: dict[str, Path]):
    """A search spec over task arithmetic of ft1 and ft2, with overrides."""

    def make(**overrides) -> dict:
        spec = {
            "recipe": {
                "merge_method": "task_arithmetic",
                "base_model": str(search_family["base"]),
                "models": [
                    {
                        "model": str(search_family["ft1"]),
                        "parameters": {"weight": {"min": 0, "max": 2}},
                    },
                    {
                        "model": str(search_family["ft2"]),
                        "parameters": {"weight": {"min": 0, "max": 2}},
                    },
                ],
                "dtype": "float32",
            },
            "tasks": [str(search_family["plus"]), str(search_family["minus"])],
            "optimizer": "random",
            "trials": 4,
            "seed": 0,
        }
        spec.update(overrides)
        return spec

    return make
