"""A tiny llama with a character-level tokenizer, built once per session, offline."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from evaluate_harness import (
    CHOICE_ROWS,
    GENERATION_ROWS,
    PERPLEXITY_TEXT,
    build_char_tokenizer,
    write_jsonl,
)


@pytest.fixture(autouse=True, scope="package")
def single_thread() -> Iterator[None]:
    """Tiny models gain nothing from intra-op threads, and on a busy machine they lose a lot."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model directory holding a random tiny llama and a character tokenizer."""
    from alloykit.tiny_models import build_model

    directory = tmp_path_factory.mktemp("tiny-lm")
    build_model("llama", directory, seed=3)
    build_char_tokenizer(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_lm(tiny_lm_dir: Path):
    """``(model, tokenizer)`` loaded from :func:`tiny_lm_dir`, in eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir, local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_dir, local_files_only=True)
    return model, tokenizer


@pytest.fixture(scope="session")
def task_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One task of each kind: a bare JSONL directory, and two ``task.yaml`` directories."""
    root = tmp_path_factory.mktemp("tasks")
    write_jsonl(root / "count" / "validation.jsonl", GENERATION_ROWS[:5])
    write_jsonl(root / "count" / "test.jsonl", GENERATION_ROWS)
    write_jsonl(root / "plus" / "test.jsonl", CHOICE_ROWS)
    (root / "plus" / "task.yaml").write_text(
        "name: plus-one\ntype: multiple_choice\ndata: {test: test.jsonl}\nmetric: acc_norm\n"
    )
    (root / "prose").mkdir()
    (root / "prose" / "text.txt").write_text(PERPLEXITY_TEXT)
    (root / "prose" / "task.yaml").write_text(
        "type: perplexity\ndata: {test: text.txt}\nwindow: 32\nstride: 16\n"
    )
    return {
        "generation": root / "count",
        "multiple_choice": root / "plus",
        "perplexity": root / "prose",
    }
