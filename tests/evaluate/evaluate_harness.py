"""Test inputs for the evaluator: a character tokenizer, JSONL writer, example rows."""

from __future__ import annotations

import json
import string
from pathlib import Path

CHARACTERS = string.ascii_lowercase + string.digits + " \n.,:;?!+-=()'\""


def build_char_tokenizer(directory: Path):
    """A character-level tokenizer (one token per character) that adds BOS, as llama's does."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    vocab = {token: index for index, token in enumerate(specials + list(CHARACTERS))}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", vocab["<s>"])]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
    )
    fast.save_pretrained(directory)
    return fast


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
