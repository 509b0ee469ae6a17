"""Vocabulary facts: which tensors have one row per token, and where config.json says how many.

mergekit marks these tensors ``is_embed`` in its architecture files (input embeddings and the
output head); here they are recognised by name, so any family is covered.
"""

from __future__ import annotations

from typing import Any

from alloykit.arch.layers import parse_layer_name

_VOCAB_HINTS = ("embed_tokens", "wte", "word_embeddings", "lm_head", "embed_out", "embed_in")
_NOT_VOCAB = ("position", "token_type", "wpe")


def is_vocab_tensor(name: str, shape: tuple[int, ...]) -> bool:
    """Whether ``name`` is an input embedding or output head: one row per token."""
    lowered = name.lower()
    named = any(hint in lowered for hint in _VOCAB_HINTS) or lowered == "shared.weight"
    return (
        len(shape) == 2
        and parse_layer_name(name) is None
        and named
        and not any(hint in lowered for hint in _NOT_VOCAB)
    )


def config_vocab_size(config: dict[str, Any]) -> int | None:
    """The vocabulary size config.json gives (at the top, else in ``text_config``)."""
    for holder in (config, config.get("text_config")):
        if isinstance(holder, dict) and isinstance(holder.get("vocab_size"), int):
            return holder["vocab_size"]
    return None


def set_config_vocab_size(config: dict[str, Any], rows: int) -> None:
    """Write ``rows`` wherever config.json keeps the vocabulary size (the top if nowhere)."""
    text = config.get("text_config")
    placed = False
    for holder in (config, text):
        if isinstance(holder, dict) and "vocab_size" in holder:
            holder["vocab_size"] = rows
            placed = True
    if not placed:
        config["vocab_size"] = rows
