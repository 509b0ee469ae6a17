"""Properties of the row layout (mergekit's ``PermutedEmbeddings`` rules) on random vocabularies."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from alloykit.recipe.model import TokenSource
from alloykit.vocab.rows import DEFAULT, PADDING, lay_out

TOKENS = [f"t{i}" for i in range(8)]


@st.composite
def vocabularies(draw):
    """2-4 models, each with a random subset of TOKENS at random distinct rows."""
    count = draw(st.integers(2, 4))
    vocabs = {}
    for index in range(count):
        have = draw(st.lists(st.sampled_from(TOKENS), unique=True, max_size=len(TOKENS)))
        rows = draw(st.permutations(range(len(TOKENS))))
        vocabs[f"m{index}"] = {token: rows[i] for i, token in enumerate(have)}
    base = draw(st.sampled_from([None, *vocabs]))
    union = sorted({t for v in vocabs.values() for t in v} | {draw(st.sampled_from(TOKENS))})
    return vocabs, base, {token: row for row, token in enumerate(union)}


def layout_of(vocabs, base, vocab, tokens=None, pad=0):
    rows = len(vocab) + pad
    counts = dict.fromkeys(vocabs, len(TOKENS))
    return lay_out(vocab, rows, vocabs, list(vocabs), base, tokens or {}, counts)


@given(vocabularies())
def test_a_model_that_has_a_token_keeps_its_own_row(case):
    vocabs, base, vocab = case
    layout = layout_of(vocabs, base, vocab)
    for model, own in layout.own.items():
        for token, row in vocab.items():
            assert own[row] == vocabs[model].get(token, DEFAULT)


@given(vocabularies())
def test_default_rows_come_only_from_models_that_have_the_token(case):
    vocabs, base, vocab = case
    layout = layout_of(vocabs, base, vocab)
    for token, row in vocab.items():
        present = [m for m in vocabs if token in vocabs[m]]
        if len(present) == len(vocabs):
            assert row not in layout.defaults
            continue
        picks = layout.defaults[row]
        assert all(vocabs[m][token] == r for m, r in picks)
        if not present:
            assert picks == ()
        elif len(present) == 1:
            assert picks == ((present[0], vocabs[present[0]][token]),)
        elif base in present:
            assert picks == ((base, vocabs[base][token]),)
        else:
            assert [m for m, _ in picks] == present


@given(vocabularies(), st.integers(1, 5))
def test_rows_past_the_tokens_are_padding_for_every_model(case, pad):
    vocabs, base, vocab = case
    layout = layout_of(vocabs, base, vocab, pad=pad)
    for own in layout.own.values():
        assert own[len(vocab) :] == (PADDING,) * pad


@given(vocabularies())
def test_forced_token_gives_every_model_the_default_row(case):
    vocabs, base, vocab = case
    token = next(iter(vocab))
    layout = layout_of(vocabs, base, vocab, {token: TokenSource("zero", force=True)})
    assert all(own[vocab[token]] == DEFAULT for own in layout.own.values())
    assert layout.defaults[vocab[token]] == ()
