"""The output tokenizer and its vocabulary, decided when the plan is made.

mergekit's sources (``mergekit/tokenizer/build.py``): ``base`` or a model takes that model's
tokenizer; ``union`` starts from the base's tokenizer and appends every other model's tokens
it lacks (regular tokens, then added tokens with their settings); ``tokenizer.tokens`` entries
are appended too. The output's vocabulary tensors then have one row per id (padded up to
``pad_to_multiple_of``) and config.json's vocabulary size says so.

When every model already uses the output vocabulary (same tokens at the same ids, the same
number of rows, no ``tokens:`` and no padding asked for), nothing is laid out again: the merge
is the plain one and the tokenizer files are copied as they are.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alloykit.arch.vocab import config_vocab_size
from alloykit.errors import PlanError
from alloykit.recipe.model import TokenizerSettings
from alloykit.vocab.rows import Layout, lay_out
from alloykit.vocab.tokenizer_files import has_tokenizer, load_tokenizer, vocabulary

if TYPE_CHECKING:
    from tokenizers import Tokenizer


@dataclass
class VocabularyPlan:
    """The output vocabulary and how the models' rows map onto it."""

    settings: TokenizerSettings
    vocab: dict[str, int]  # output token → row
    rows: int  # output rows (tokens, then padding)
    model_vocabs: dict[str, dict[str, int]]  # token → row, for ids below each model's size
    row_counts: dict[str, int]
    template: Path  # the tokenizer files the output's start from
    tokenizer: Tokenizer | None  # the output tokenizer when it differs from ``template``'s
    layouts: dict[tuple[tuple[str, ...], str | None], Layout] = field(default_factory=dict)

    def layout(self, models: Sequence[str], base: str | None) -> Layout:
        """The layout of one tensor's inputs (models, base last), computed once per set."""
        key = (tuple(models), base)
        if key not in self.layouts:
            self.layouts[key] = lay_out(
                self.vocab,
                self.rows,
                self.model_vocabs,
                models,
                base,
                self.settings.tokens,
                self.row_counts,
            )
        return self.layouts[key]

    def summary(self) -> str:
        """One line for the plan: what the output vocabulary is and what it changes."""
        source = self.settings.source
        padded = f", padded to {self.rows} rows" if self.rows > len(self.vocab) else ""
        return (
            f"tokenizer {source}: {len(self.vocab)} tokens{padded}; embeddings and output "
            "head laid out in its vocabulary before merging (a model lacking a token takes "
            "the row of the model that has it, else the base's, else their mean, else zeros)"
        )

    def digest(self) -> str:
        """Identifies the output vocabulary (part of the plan's fingerprint)."""
        text = repr((sorted(self.vocab.items()), self.rows, sorted(self.settings.tokens)))
        return hashlib.sha256(text.encode()).hexdigest()


def plan_vocabulary(
    settings: TokenizerSettings,
    roots: Mapping[str, Path],
    configs: Mapping[str, dict[str, Any]],
    row_counts: Mapping[str, int],
    base: str,
    source_root: Path,
    source_reference: str,
) -> VocabularyPlan | None:
    """The vocabulary plan, or None when the models need no new layout.

    ``roots``/``configs``/``row_counts`` describe the merged models (rows of their input
    embeddings); ``base`` is the base model (or the first model); ``source_root`` holds the
    tokenizer named by ``tokenizer_source`` (for ``union``, the base's).
    """
    if not has_tokenizer(source_root):
        if settings.source == "union" or settings.tokens or settings.pad_to_multiple_of:
            raise PlanError(
                f"tokenizer_source {settings.source}: model {source_reference!r} has no "
                f"tokenizer files in {source_root}",
                "name a tokenizer source that has tokenizer.json (or a slow tokenizer)",
            )
        return None
    tokenizers = {m: load_tokenizer(root, m) for m, root in roots.items() if has_tokenizer(root)}
    if base not in tokenizers:
        tokenizers[base] = load_tokenizer(source_root, source_reference)
    full = {m: vocabulary(tokenizers.get(m, tokenizers[base])) for m in roots}
    limited = {
        m: {t: i for t, i in vocab.items() if i < _usable_rows(configs[m], row_counts[m])}
        for m, vocab in full.items()
    }
    output, extended = _output_tokenizer(
        settings, source_root, source_reference, tokenizers, base, limited
    )
    template = source_root if settings.source != "union" else roots[base]
    vocab = vocabulary(output)
    rows = max(vocab.values(), default=-1) + 1
    if settings.pad_to_multiple_of:
        rows = -(-rows // settings.pad_to_multiple_of) * settings.pad_to_multiple_of
    if _unchanged(settings, vocab, limited, row_counts):
        return None
    return VocabularyPlan(
        settings=settings,
        vocab=vocab,
        rows=rows,
        model_vocabs=limited,
        row_counts=dict(row_counts),
        template=template,
        tokenizer=output if extended else None,
    )


def _usable_rows(config: dict[str, Any], rows: int) -> int:
    """Ids below this have a row: config.json's vocabulary size, capped by the tensor."""
    size = config_vocab_size(config)
    return min(size, rows) if size is not None else rows


def _unchanged(
    settings: TokenizerSettings,
    vocab: dict[str, int],
    limited: Mapping[str, dict[str, int]],
    row_counts: Mapping[str, int],
) -> bool:
    if settings.tokens or settings.pad_to_multiple_of:
        return False
    if len(set(row_counts.values())) != 1:
        return False
    return all(model_vocab == vocab for model_vocab in limited.values())


def _output_tokenizer(
    settings: TokenizerSettings,
    source_root: Path,
    source_reference: str,
    tokenizers: Mapping[str, Tokenizer],
    base: str,
    limited: Mapping[str, dict[str, int]],
) -> tuple[Tokenizer, bool]:
    """The output tokenizer, and whether it has tokens its source's files lack."""
    from tokenizers import Tokenizer

    if settings.source == "union":
        output = Tokenizer.from_str(tokenizers[base].to_str())
        _add_union(output, tokenizers, limited)
    else:
        output = load_tokenizer(source_root, source_reference)
    have = vocabulary(output)
    added = output.add_tokens([token for token in settings.tokens if token not in have])
    return output, settings.source == "union" or added > 0


def _add_union(
    output: Tokenizer, tokenizers: Mapping[str, Tokenizer], limited: Mapping[str, dict[str, int]]
) -> None:
    """Append every model's tokens the output lacks, in model order then id order: regular
    tokens as plain added tokens, added tokens with their own settings (the first model's
    when several define one)."""
    have = set(vocabulary(output))
    regular: list[str] = []
    special: dict[str, Any] = {}
    for model, tokenizer in tokenizers.items():
        added = {
            token.content: token
            for index, token in tokenizer.get_added_tokens_decoder().items()
            if token.content in limited[model] and limited[model][token.content] == index
        }
        for token, _ in sorted(limited[model].items(), key=lambda item: item[1]):
            if token in added:
                special.setdefault(token, added[token])
            elif token not in have:
                have.add(token)
                regular.append(token)
    output.add_tokens(regular)
    output.add_tokens([token for content, token in special.items() if content not in have])
