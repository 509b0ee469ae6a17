"""Which row of which model gives each output token its embedding, before the merge.

mergekit's semantics (``mergekit/tokenizer/embed.py``, ``PermutedEmbeddings``): every model's
vocabulary tensor is first laid out in the output vocabulary, then the recipe's method merges
those tensors as usual. A model that has a token keeps its own row for it. A model that lacks
it gets the token's default row, chosen by the token's ``tokenizer.tokens`` entry, else by:

1. exactly one model has the token: that model's row;
2. no model has it: zeros;
3. the base model has it: the base's row;
4. otherwise: the mean of the rows of the models that have it.

``force: true`` gives every model the default row. Rows past the last token (padding to
``pad_to_multiple_of``, or ids no token uses) get the mean of the model's token rows, as the
vocabulary-expansion note mergekit follows suggests (Hewitt 2021,
https://nlp.stanford.edu/~johnhew/vocab-expansion.html).

Everything here is plain Python: the planner decides the layout, and
:mod:`alloykit.vocab.source` builds the tensors when the engine reads them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from alloykit.errors import PlanError
from alloykit.recipe.model import TokenSource

Pick = tuple[str, int]  # (model, row of its tensor)
PADDING = -2  # a row that holds no token: the mean of the model's token rows
DEFAULT = -1  # the token's default row (see Layout.defaults)


@dataclass(frozen=True)
class Layout:
    """How each model's vocabulary tensor maps onto the output rows.

    ``own[model][row]`` is the model's row for the output row, or :data:`DEFAULT` (the token's
    default row: the mean of ``defaults[row]``'s picks, zeros when there are none) or
    :data:`PADDING`.
    """

    rows: int
    own: dict[str, tuple[int, ...]]
    defaults: dict[int, tuple[Pick, ...]]


def lay_out(
    vocab: Mapping[str, int],
    rows: int,
    vocabs: Mapping[str, Mapping[str, int]],
    models: Sequence[str],
    base: str | None,
    tokens: Mapping[str, TokenSource],
    row_counts: Mapping[str, int],
) -> Layout:
    """The layout of ``models`` (the merge's inputs, base included) in the output vocabulary.

    ``vocabs[m]`` holds the tokens model ``m`` has a row for (ids below its vocabulary size);
    ``row_counts[m]`` is the number of rows of its tensor (for ``model_token`` ids).
    """
    own: dict[str, list[int]] = {m: [PADDING] * rows for m in models}
    defaults: dict[int, tuple[Pick, ...]] = {}
    for token, row in vocab.items():
        setting = tokens.get(token, TokenSource("auto"))
        present = [m for m in models if token in vocabs[m]]
        for model in models:
            if token in vocabs[model] and not setting.force:
                own[model][row] = vocabs[model][token]
            else:
                own[model][row] = DEFAULT
        if setting.force or len(present) < len(models):
            defaults[row] = _default(token, setting, present, models, base, vocabs, row_counts)
    return Layout(rows, {m: tuple(r) for m, r in own.items()}, defaults)


def _default(
    token: str,
    setting: TokenSource,
    present: list[str],
    models: Sequence[str],
    base: str | None,
    vocabs: Mapping[str, Mapping[str, int]],
    row_counts: Mapping[str, int],
) -> tuple[Pick, ...]:
    where = f"tokenizer.tokens.{token}.source"
    if setting.kind == "zero":
        return ()
    if setting.kind in ("model", "model_token"):
        model = setting.model
        assert model is not None
        if model not in models:
            raise PlanError(
                f"{where}: model {model!r} is not among the models merged into this tensor",
                f"name one of: {', '.join(models)}",
            )
        if setting.kind == "model":
            if token not in vocabs[model]:
                raise PlanError(
                    f"{where}: model {model!r} has no token {token!r}",
                    "use kind: model_token to take another token's row, or kind: zero",
                )
            return ((model, vocabs[model][token]),)
        row = setting.token_id if setting.token_id is not None else vocabs[model].get(setting.token)
        if row is None or row >= row_counts[model]:
            what = f"token {setting.token!r}" if setting.token_id is None else f"row {row}"
            raise PlanError(
                f"{where}: model {model!r} has no {what}",
                "name a token of that model, or a row below its vocabulary size",
            )
        return ((model, row),)
    if len(present) == 1:
        return ((present[0], vocabs[present[0]][token]),)
    if base is not None and base in present:
        return ((base, vocabs[base][token]),)
    return tuple((m, vocabs[m][token]) for m in present)
