"""Test inputs for the evaluator: a character tokenizer, JSONL writer, example rows."""

from __future__ import annotations

import json
from pathlib import Path

from alloykit.tiny_models import build_char_tokenizer

__all__ = ["build_char_tokenizer", "write_jsonl"]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


GENERATION_ROWS = [{"prompt": f"count {i}:", "answer": str(i + 1)} for i in range(20)]
CHOICE_ROWS = [
    {"prompt": f"{i} + 1 =", "choices": [f" {i + 1}", f" {i + 2}", f" {i}"], "answer": i % 3}
    for i in range(12)
]
PERPLEXITY_TEXT = "the quick brown fox jumps over the lazy dog. " * 8
