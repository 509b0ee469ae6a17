"""Greedy answers: batched, left-padded generation equals a plain one-prompt-at-a-time loop."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch

from alloykit.errors import AlloyError
from alloykit.evaluate import exact_match, generate_answers

PROMPTS = [
    "q",
    "what is 2+2?",
    "reverse: abc =",
    "the quick brown fox jumps over the lazy dog",
    "hello",
    "x = (1, 2, 3); y =",
    "a b",
]


def reference_answer(model, tokenizer, prompt: str, max_new_tokens: int) -> str:
    """Unbatched, uncached greedy decoding: re-run the whole sequence for every new token."""
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    generated: list[int] = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            token = int(model(input_ids=ids).logits[0, -1].argmax())
            if token == tokenizer.eos_token_id:
                break
            generated.append(token)
            ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
            if "\n" in tokenizer.decode(generated):
                break
    return tokenizer.decode(generated, skip_special_tokens=True).split("\n", 1)[0].strip()


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_batched_answers_equal_one_prompt_at_a_time(tiny_lm, batch_size: int) -> None:
    model, tokenizer = tiny_lm
    expected = [reference_answer(model, tokenizer, prompt, 12) for prompt in PROMPTS]
    answers = generate_answers(model, tokenizer, PROMPTS, max_new_tokens=12, batch_size=batch_size)
    assert answers == expected
    assert any(answers), "a tiny random model should produce some non-empty answers"


@pytest.mark.parametrize("stop", ["\n", "</s>"])
def test_answer_is_empty_when_the_first_token_is_a_stop(tiny_lm, stop: str) -> None:
    model, tokenizer = tiny_lm
    with always_predicting(model, tokenizer.convert_tokens_to_ids(stop)):
        answers = generate_answers(model, tokenizer, ["q", "hello"], max_new_tokens=8)
    assert answers == ["", ""]


def test_answer_keeps_text_before_a_token_holding_a_newline(tiny_lm) -> None:
    model, tokenizer = tiny_lm
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.add_tokens(["ok\nmore"])
    with always_predicting(model, len(tokenizer) - 1):
        answers = generate_answers(model, tokenizer, ["q"], max_new_tokens=8)
    assert answers == ["ok"]


def test_exact_match_scores_known_answers(tiny_lm) -> None:
    model, tokenizer = tiny_lm
    answers = generate_answers(model, tokenizer, PROMPTS, max_new_tokens=12)
    examples = [{"prompt": p, "answer": f"  {a}  "} for p, a in zip(PROMPTS, answers, strict=True)]
    examples[0]["answer"] = answers[0] + "wrong"
    score = exact_match(model, tokenizer, examples, max_new_tokens=12)
    assert score == pytest.approx((len(PROMPTS) - 1) / len(PROMPTS))


def test_empty_prompt_list_gives_no_answers(tiny_lm) -> None:
    model, tokenizer = tiny_lm
    assert generate_answers(model, tokenizer, [], max_new_tokens=4) == []


def test_exact_match_without_examples_is_an_error(tiny_lm) -> None:
    model, tokenizer = tiny_lm
    with pytest.raises(AlloyError, match="no examples"):
        exact_match(model, tokenizer, [], max_new_tokens=4)


@contextmanager
def always_predicting(model, token: int) -> Iterator[None]:
    """While active, ``model``'s output head ranks ``token`` first at every position."""

    def boost(module, inputs, logits: torch.Tensor) -> torch.Tensor:
        boosted = logits.clone()
        boosted[..., token] += 1e4
        return boosted

    handle = model.get_output_embeddings().register_forward_hook(boost)
    try:
        yield
    finally:
        handle.remove()


def test_eval_mode_leaves_a_model_in_eval_mode_alone(tiny_lm) -> None:
    from alloykit.evaluate.generation import eval_mode

    model = tiny_lm[0]
    calls = []
    original = model.train
    model.train = lambda mode=True: calls.append(mode) or original(mode)
    try:
        with eval_mode(model):
            assert not model.training
    finally:
        del model.train
    assert calls == []


def test_eval_mode_switches_a_partly_training_model_and_restores_it(tiny_lm) -> None:
    from alloykit.evaluate.generation import eval_mode

    model = copy.deepcopy(tiny_lm[0]).train()
    with eval_mode(model):
        assert not any(module.training for module in model.modules())
    assert all(module.training for module in model.modules())
    model.eval()
    model.model.layers[0].train()
    with eval_mode(model):
        assert not any(module.training for module in model.modules())
    assert not model.training


@pytest.mark.parametrize(
    "sequences", [[[5, 6, 7], [8], []], [[1]], [[], []], [(4, 5), [6, 7, 8, 9]]]
)
def test_left_padding_puts_every_sequence_at_the_right_edge(sequences) -> None:
    from alloykit.evaluate.generation import left_padded

    input_ids, mask, positions = left_padded(sequences, 0, torch.device("cpu"))
    width = max(len(tokens) for tokens in sequences)
    assert input_ids.shape == mask.shape == positions.shape == (len(sequences), width)
    assert input_ids.dtype == mask.dtype == torch.long
    for row, tokens in enumerate(sequences):
        pad = width - len(tokens)
        assert input_ids[row].tolist() == [0] * pad + list(tokens)
        assert mask[row].tolist() == [0] * pad + [1] * len(tokens)
        assert positions[row].tolist() == [0] * pad + list(range(len(tokens)))
