"""A remembered tokenizer gives the tokenizer's own ids, encodes each text once, and leaves the
verdicts of every evaluator unchanged."""

from __future__ import annotations

import copy
import pickle

import pytest

from alloykit.evaluate import answer_hits, choice_hits
from alloykit.evaluate.remembered import RememberedTokenizer

TEXTS = ["q", "what is 2+2?", "reverse: abc =", "", "q", " ab c\n"]


class CountingTokenizer:
    """Forwards to a tokenizer and counts the texts it is asked to encode."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.encoded: list[str] = []

    def __call__(self, text, **options):
        self.encoded.extend([text] if isinstance(text, str) else text)
        return self.tokenizer(text, **options)

    def __getattr__(self, name: str):
        return getattr(self.tokenizer, name)


@pytest.mark.parametrize("options", [{}, {"add_special_tokens": False}])
def test_ids_are_the_tokenizers_own(tiny_lm, options: dict) -> None:
    tokenizer = tiny_lm[1]
    remembered = RememberedTokenizer(tokenizer)
    expected = tokenizer(TEXTS, **options)["input_ids"]
    assert remembered(TEXTS, **options)["input_ids"] == expected
    assert remembered(TEXTS, **options)["input_ids"] == expected


def test_each_text_is_encoded_once_per_setting(tiny_lm) -> None:
    counting = CountingTokenizer(tiny_lm[1])
    remembered = RememberedTokenizer(counting)
    remembered(TEXTS)
    remembered(TEXTS[::-1])
    remembered(TEXTS, add_special_tokens=False)
    distinct = list(dict.fromkeys(TEXTS))
    assert counting.encoded == distinct + distinct


def test_returned_ids_can_be_changed_without_changing_what_is_remembered(tiny_lm) -> None:
    remembered = RememberedTokenizer(tiny_lm[1])
    first = remembered(["abc"])["input_ids"]
    first[0].append(-1)
    assert remembered(["abc"])["input_ids"] == tiny_lm[1](["abc"])["input_ids"]


def test_other_calls_and_attributes_go_to_the_tokenizer(tiny_lm) -> None:
    tokenizer = tiny_lm[1]
    remembered = RememberedTokenizer(tokenizer)
    single = remembered("abc", return_tensors="pt")["input_ids"]
    assert single.tolist() == tokenizer("abc", return_tensors="pt")["input_ids"].tolist()
    assert len(remembered) == len(tokenizer)
    assert remembered.eos_token_id == tokenizer.eos_token_id
    assert remembered.decode([5, 6]) == tokenizer.decode([5, 6])


@pytest.mark.parametrize("strategy", ["forced", "generate"])
def test_exact_match_verdicts_are_unchanged(tiny_lm, strategy: str) -> None:
    model, tokenizer = tiny_lm
    examples = [
        {"prompt": prompt, "answer": answer}
        for prompt, answer in [
            ("q", "a"),
            ("what is 2+2?", "4"),
            ("reverse: abc =", "cba"),
            ("hi", ""),
        ]
    ]
    remembered = RememberedTokenizer(tokenizer)
    expected = answer_hits(model, tokenizer, examples, max_new_tokens=6, strategy=strategy)
    for _ in range(2):
        hits = answer_hits(model, remembered, examples, max_new_tokens=6, strategy=strategy)
        assert hits == expected


def test_multiple_choice_verdicts_are_unchanged(tiny_lm) -> None:
    model, tokenizer = tiny_lm
    examples = [
        {"prompt": f"{i} + 1 =", "choices": [f" {i + 1}", f" {i + 2}", f" {i}"], "answer": i % 3}
        for i in range(6)
    ]
    remembered = RememberedTokenizer(tokenizer)
    expected = choice_hits(model, tokenizer, examples)
    assert choice_hits(model, remembered, examples) == expected
    assert choice_hits(model, remembered, examples) == expected


def test_a_copy_or_pickle_keeps_the_ids_and_the_tokenizer(tiny_lm) -> None:
    tokenizer = tiny_lm[1]
    remembered = RememberedTokenizer(tokenizer)
    expected = remembered(TEXTS)["input_ids"]
    for other in (copy.deepcopy(remembered), pickle.loads(pickle.dumps(remembered))):
        assert other(TEXTS)["input_ids"] == expected
        assert other.eos_token_id == tokenizer.eos_token_id
