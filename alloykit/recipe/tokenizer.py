"""The recipe's tokenizer settings: ``tokenizer_source:`` or mergekit's ``tokenizer:`` block.

mergekit's forms (``mergekit/tokenizer/config.py``): ``tokenizer_source: union | base | MODEL``,
or ``tokenizer: {source, tokens, pad_to_multiple_of}`` whose ``source`` defaults to ``union``.
Each ``tokens:`` entry names where one token's embedding row comes from: a model (its row for
that token), ``{kind: zero}``, or ``{kind: model_token, model, token | token_id}`` (another
token's row in a model); ``force: true`` gives every model that row, even those that have the
token. Token entries are also added to the output tokenizer.
"""

from __future__ import annotations

from typing import Any

from alloykit.recipe.document import fail
from alloykit.recipe.model import TokenizerSettings, TokenSource
from alloykit.recipe.reference import parse_reference
from alloykit.recipe.schema import RecipeSchema

_TOKEN_KEYS = ("source", "force")
_MODEL_TOKEN_KEYS = ("kind", "model", "token", "token_id")


def parse_tokenizer(schema: RecipeSchema, base_model: str | None) -> TokenizerSettings | None:
    """The tokenizer settings, or None when the recipe names no tokenizer source."""
    if schema.tokenizer is not None and schema.tokenizer_source is not None:
        fail(
            "tokenizer",
            "give either tokenizer_source: or tokenizer:, not both",
            "keep tokenizer_source:",
        )
    if schema.tokenizer is None:
        if schema.tokenizer_source is None:
            return None
        return TokenizerSettings(_source(schema.tokenizer_source, "tokenizer_source", base_model))
    block = schema.tokenizer
    tokens = _tokens(block.tokens)
    return TokenizerSettings(
        source=_source(block.source, "tokenizer.source", base_model),
        tokens=tokens,
        pad_to_multiple_of=_multiple(block.pad_to_multiple_of),
    )


def _source(raw: Any, path: str, base_model: str | None) -> str:
    if raw == "union":
        return "union"
    if raw == "base":
        if base_model is None:
            fail(
                path,
                "base needs a base_model",
                "set base_model:, or name the model whose tokenizer to use",
            )
        return "base"
    return parse_reference(raw, path)


def _multiple(raw: Any) -> int | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
        fail(
            "tokenizer.pad_to_multiple_of",
            f"expected a positive integer, got {raw!r}",
            "e.g. pad_to_multiple_of: 64",
        )
    return raw


def _tokens(raw: Any) -> dict[str, TokenSource]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        fail("tokenizer.tokens", f"expected a mapping of token to settings, got {raw!r}")
    tokens = {}
    for token, entry in raw.items():
        path = f"tokenizer.tokens.{token}"
        if not isinstance(token, str) or not token:
            fail("tokenizer.tokens", f"expected token strings as keys, got {token!r}")
        tokens[token] = _token(entry if entry is not None else {}, path)
    return tokens


def _token(entry: Any, path: str) -> TokenSource:
    if not isinstance(entry, dict):
        fail(path, f"expected a mapping with source: and force:, got {entry!r}")
    for key in entry:
        if key not in _TOKEN_KEYS:
            fail(f"{path}.{key}", "unknown key", f"allowed here: {', '.join(_TOKEN_KEYS)}")
    force = entry.get("force", False)
    if not isinstance(force, bool):
        fail(f"{path}.force", f"expected true or false, got {force!r}")
    raw = entry.get("source")
    if raw is None:
        if force:
            fail(f"{path}.force", "force needs a source", "add source: (a model, or {kind: zero})")
        return TokenSource("auto")
    if isinstance(raw, dict) and "kind" in raw:
        return _kind(raw, f"{path}.source", force)
    return TokenSource("model", model=parse_reference(raw, f"{path}.source"), force=force)


def _kind(raw: dict[str, Any], path: str, force: bool) -> TokenSource:
    kind = raw["kind"]
    if kind == "zero":
        extra = [key for key in raw if key != "kind"]
        if extra:
            fail(f"{path}.{extra[0]}", "unknown key", "kind: zero takes no other keys")
        return TokenSource("zero", force=force)
    if kind != "model_token":
        fail(f"{path}.kind", f"unknown kind {kind!r}", "use zero or model_token")
    for key in raw:
        if key not in _MODEL_TOKEN_KEYS:
            fail(f"{path}.{key}", "unknown key", f"allowed here: {', '.join(_MODEL_TOKEN_KEYS)}")
    if "model" not in raw:
        fail(f"{path}.model", "required key is missing", "name the model to take the row from")
    token, token_id = raw.get("token"), raw.get("token_id")
    if (token is None) == (token_id is None):
        fail(path, "give exactly one of token: and token_id:", "e.g. token: '<|im_end|>'")
    if token is not None and not isinstance(token, str):
        fail(f"{path}.token", f"expected a token string, got {token!r}")
    if token_id is not None and (
        isinstance(token_id, bool) or not isinstance(token_id, int) or token_id < 0
    ):
        fail(f"{path}.token_id", f"expected a token id (0 or more), got {token_id!r}")
    return TokenSource(
        "model_token",
        model=parse_reference(raw["model"], f"{path}.model"),
        token=token,
        token_id=token_id,
        force=force,
    )
