"""Exact match of greedy answers: whether each example's greedy continuation, cut at the first
newline or EOS and stripped, is its stripped answer.

Two strategies reach the same verdicts. ``forced`` (the default) decides most examples with one
teacher-forced forward pass per batch (:mod:`alloykit.evaluate.forced`) and generates only the
few it cannot decide; ``generate`` generates every answer (:func:`generate_answers`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

from alloykit.errors import AlloyError
from alloykit.evaluate.forced import forced_verdicts
from alloykit.evaluate.generation import generate_answers, token_budgets

Strategy = Literal["forced", "generate"]
STRATEGIES: tuple[str, ...] = ("forced", "generate")


def exact_match(
    model,
    tokenizer,
    examples: Sequence[dict],
    *,
    max_new_tokens: int | Sequence[int],
    batch_size: int = 64,
    on_batch: Callable[[int, int], None] | None = None,
    strategy: Strategy = "forced",
) -> float:
    """Fraction of ``{"prompt", "answer"}`` examples whose greedy answer is the stripped answer."""
    if not examples:
        raise AlloyError("exact_match: no examples to score")
    hits = answer_hits(
        model,
        tokenizer,
        examples,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        on_batch=on_batch,
        strategy=strategy,
    )
    return sum(hits) / len(examples)


def answer_hits(
    model,
    tokenizer,
    examples: Sequence[dict],
    *,
    max_new_tokens: int | Sequence[int],
    batch_size: int = 64,
    on_batch: Callable[[int, int], None] | None = None,
    strategy: Strategy = "forced",
) -> list[bool]:
    """Whether each example's greedy answer is its stripped answer: the per-item responses
    that item response theory estimates from (:mod:`alloykit.search.irt`).

    ``max_new_tokens`` is one token budget for all examples, or each example's own, so that
    the examples of several tasks (each with its task's budget) share batches: fewer, fuller
    forward passes than one call per task, and the same verdicts."""
    check_strategy(strategy)
    if strategy == "generate":
        return _generated_hits(model, tokenizer, examples, max_new_tokens, batch_size, on_batch)
    verdicts = forced_verdicts(
        model,
        tokenizer,
        examples,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        on_batch=on_batch,
    )
    undecided = [index for index, verdict in enumerate(verdicts) if verdict is None]
    if undecided:
        budgets = token_budgets(max_new_tokens, len(examples))
        generated = _generated_hits(
            model,
            tokenizer,
            [examples[i] for i in undecided],
            [budgets[i] for i in undecided],
            batch_size,
            None,
        )
        for index, hit in zip(undecided, generated, strict=True):
            verdicts[index] = hit
    return [bool(verdict) for verdict in verdicts]


def check_strategy(strategy: str) -> None:
    """Refuse an unknown strategy in one line, before any model runs."""
    if strategy not in STRATEGIES:
        raise AlloyError(
            f"unknown exact-match strategy {strategy!r}", f"use one of: {', '.join(STRATEGIES)}"
        )


def _generated_hits(
    model,
    tokenizer,
    examples: Sequence[dict],
    max_new_tokens: int | Sequence[int],
    batch_size: int,
    on_batch: Callable[[int, int], None] | None,
) -> list[bool]:
    answers = generate_answers(
        model,
        tokenizer,
        [example["prompt"] for example in examples],
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        on_batch=on_batch,
    )
    return [
        answer == str(example["answer"]).strip()
        for answer, example in zip(answers, examples, strict=True)
    ]
