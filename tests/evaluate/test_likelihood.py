"""Log-likelihood scores equal plain per-example computations, whatever the batching."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from alloykit.evaluate import choice_accuracy, choice_scores, perplexity
from alloykit.evaluate.likelihood import continuation_logprobs, sliding_windows

EXAMPLES = [
    {"prompt": "2 + 2 =", "choices": [" 4", " 5", " 22"], "answer": 0},
    {"prompt": "the sky is", "choices": [" blue", " green"], "answer": 0},
    {"prompt": "a", "choices": [" b", " c", " d", " e"], "answer": 3},
    {"prompt": "reverse abc:", "choices": [" cba", " abc"], "answer": 1},
    {
        "prompt": "a much longer prompt, so that rows differ in length:",
        "choices": ["x", "yy"],
        "answer": 1,
    },
]
TEXT = "the quick brown fox jumps over the lazy dog; " * 6


def reference_choice_loglikelihood(model, tokenizer, prompt: str, choice: str) -> float:
    """One unpadded forward pass over ``prompt + choice``; sum the choice tokens' log-probs."""
    ids = tokenizer(prompt + choice, return_tensors="pt")["input_ids"]
    start = len(tokenizer(prompt)["input_ids"])
    with torch.no_grad():
        logprobs = model(input_ids=ids).logits[0].log_softmax(-1)
    return sum(float(logprobs[t - 1, ids[0, t]]) for t in range(start, ids.shape[1]))


def reference_perplexity(model, tokenizer, text: str, window: int, stride: int) -> float:
    """The Hugging Face perplexity recipe: one window at a time, loss via ``labels``."""
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    total, count, previous_end = 0.0, 0, 0
    for begin in range(0, ids.shape[1], stride):
        end = min(begin + window, ids.shape[1])
        inputs = ids[:, begin:end]
        labels = inputs.clone()
        labels[:, : -(end - previous_end)] = -100
        with torch.no_grad():
            loss = model(input_ids=inputs, labels=labels).loss
        scored = int((labels[:, 1:] != -100).sum())
        total += float(loss) * scored
        count += scored
        previous_end = end
        if end == ids.shape[1]:
            break
    return math.exp(total / count)


@pytest.mark.parametrize("batch_size", [1, 4, 64])
def test_choice_scores_equal_per_example_loglikelihoods(tiny_lm, batch_size: int) -> None:
    model, tokenizer = tiny_lm
    expected = [
        [reference_choice_loglikelihood(model, tokenizer, e["prompt"], c) for c in e["choices"]]
        for e in EXAMPLES
    ]
    scores = choice_scores(model, tokenizer, EXAMPLES, batch_size=batch_size)
    for row, expected_row in zip(scores, expected, strict=True):
        assert row == pytest.approx(expected_row, abs=1e-4)


def test_normalised_scores_divide_by_choice_length(tiny_lm) -> None:
    model, tokenizer = tiny_lm
    raw = choice_scores(model, tokenizer, EXAMPLES)
    normalised = choice_scores(model, tokenizer, EXAMPLES, normalize=True)
    for example, raw_row, row in zip(EXAMPLES, raw, normalised, strict=True):
        lengths = [len(choice) for choice in example["choices"]]
        assert row == pytest.approx([s / n for s, n in zip(raw_row, lengths, strict=True)])


@pytest.mark.parametrize("normalize", [False, True])
def test_accuracy_counts_argmax_choices(tiny_lm, normalize: bool) -> None:
    model, tokenizer = tiny_lm
    hits = 0
    for example in EXAMPLES:
        scores = [
            reference_choice_loglikelihood(model, tokenizer, example["prompt"], choice)
            / (len(choice) if normalize else 1)
            for choice in example["choices"]
        ]
        hits += scores.index(max(scores)) == example["answer"]
    accuracy = choice_accuracy(model, tokenizer, EXAMPLES, normalize=normalize)
    assert accuracy == hits / len(EXAMPLES)


def test_all_pairs_of_a_batch_share_one_forward_pass(tiny_lm) -> None:
    model, tokenizer = tiny_lm
    calls = []
    handle = model.register_forward_hook(lambda *args: calls.append(1))
    try:
        choice_scores(model, tokenizer, EXAMPLES, batch_size=64)
    finally:
        handle.remove()
    assert len(calls) == 1


def test_continuation_logprobs_score_only_the_last_tokens(tiny_lm) -> None:
    model, tokenizer = tiny_lm
    ids = tokenizer("hello world")["input_ids"]
    full = continuation_logprobs(model, [ids], [len(ids) - 1])
    tail = continuation_logprobs(model, [ids], [3])
    head = continuation_logprobs(model, [ids[:-3]], [len(ids) - 4])
    assert float(full) == pytest.approx(float(tail + head), abs=1e-4)


def test_perplexity_of_one_window_is_exp_of_the_mean_loss(tiny_lm) -> None:
    model, tokenizer = tiny_lm
    text = "the quick brown fox"
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        loss = model(input_ids=ids, labels=ids).loss
    value, count = perplexity(model, tokenizer, text, window=64)
    assert count == ids.shape[1] - 1
    assert value == pytest.approx(math.exp(float(loss)), rel=1e-5)


@pytest.mark.parametrize(
    ("window", "stride", "batch_size"), [(32, 16, 64), (24, 23, 2), (40, 7, 5)]
)
def test_sliding_window_perplexity_equals_the_hugging_face_recipe(
    tiny_lm, window: int, stride: int, batch_size: int
) -> None:
    model, tokenizer = tiny_lm
    expected = reference_perplexity(model, tokenizer, TEXT, window, stride)
    value, _ = perplexity(
        model, tokenizer, TEXT, window=window, stride=stride, batch_size=batch_size
    )
    assert value == pytest.approx(expected, rel=1e-5)


@given(length=st.integers(2, 300), window=st.integers(2, 64), stride_fraction=st.floats(0.01, 1.0))
def test_sliding_windows_score_every_token_but_the_first_once(
    length: int, window: int, stride_fraction: float
) -> None:
    stride = max(1, int(window * stride_fraction))
    windows = sliding_windows(length, window, stride)
    scored = [t for _, end, count in windows for t in range(end - count, end)]
    assert sorted(scored) == list(range(1, length))
    assert all(end - begin <= window and count <= end - begin - 1 for begin, end, count in windows)
