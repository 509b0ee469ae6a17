"""Log-likelihood scoring: multiple-choice accuracy and sliding-window perplexity.

Both reduce to one batched primitive, :func:`continuation_logprobs`: the summed log-probability
of the last ``k`` tokens of each sequence given the tokens before them. Sequences are sorted by
length, left-padded, and scored in one forward pass per batch; only the logits of the scored
positions are computed (``logits_to_keep``), and batches shrink when those logits would exceed
a memory budget.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from alloykit.errors import AlloyError
from alloykit.evaluate.generation import eval_mode, left_padded, model_device
from alloykit.evaluate.tasks import select

LOGITS_BUDGET_BYTES = 512 * 2**20

Progress = Callable[[int, int], None]  # (rows in this batch, rows in all)


@torch.inference_mode()
def continuation_logprobs(
    model,
    sequences: Sequence[Sequence[int]],
    scored: Sequence[int],
    *,
    batch_size: int = 64,
    on_batch: Progress | None = None,
) -> torch.Tensor:
    """``out[i]``: sum of log p(token | tokens before it) over the last ``scored[i]`` tokens."""
    if batch_size < 1:
        raise AlloyError(f"batch_size must be at least 1, got {batch_size}")
    vocab = model.get_output_embeddings().weight.shape[0]
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    totals = torch.zeros(len(sequences), dtype=torch.float64)
    with eval_mode(model):
        for rows in _batches(order, scored, batch_size, vocab):
            totals[rows] = _score_batch(
                model, [sequences[i] for i in rows], [scored[i] for i in rows]
            )
            if on_batch is not None:
                on_batch(len(rows), len(sequences))
    return totals


def _score_batch(model, sequences: list[Sequence[int]], scored: list[int]) -> torch.Tensor:
    """One forward pass; only the logits of the scored positions (and one before) are made."""
    device = model_device(model)
    keeps_logits = "logits_to_keep" in inspect.signature(model.forward).parameters
    input_ids, mask, positions = left_padded(sequences, 0, device)
    keep = max(scored) + 1
    extra = {"logits_to_keep": keep} if keeps_logits else {}
    logits = model(input_ids=input_ids, attention_mask=mask, position_ids=positions, **extra)
    logits = logits.logits[:, -keep:-1].float()
    targets = input_ids[:, -keep + 1 :]
    logprobs = logits.gather(-1, targets[..., None]).squeeze(-1) - logits.logsumexp(-1)
    counts = torch.tensor(scored, device=device)
    columns = torch.arange(keep - 1, device=device)
    logprobs = logprobs.masked_fill(columns[None, :] < (keep - 1 - counts)[:, None], 0.0)
    return logprobs.sum(-1).double().cpu()


def choice_scores(
    model,
    tokenizer,
    examples: Sequence[dict[str, Any]],
    *,
    normalize: bool = False,
    batch_size: int = 64,
    on_batch: Progress | None = None,
) -> list[list[float]]:
    """Log-likelihood of each choice given its prompt; per character of the choice if ``normalize``.

    The choice is appended to the prompt verbatim; its tokens are those of ``prompt + choice``
    past the prompt's own tokens (as lm-evaluation-harness does).
    """
    prompts = tokenizer([example["prompt"] for example in examples])["input_ids"]
    pairs = [(i, choice) for i, example in enumerate(examples) for choice in example["choices"]]
    wholes = tokenizer([examples[i]["prompt"] + choice for i, choice in pairs])["input_ids"]
    scored = [len(whole) - len(prompts[i]) for (i, _), whole in zip(pairs, wholes, strict=True)]
    for (i, choice), count in zip(pairs, scored, strict=True):
        if count < 1 or not prompts[i]:
            raise AlloyError(
                f"example {i}: prompt {examples[i]['prompt']!r} with choice {choice!r} "
                "leaves no tokens to score",
                "give every example a non-empty prompt and choices",
            )
    totals = continuation_logprobs(
        model, wholes, scored, batch_size=batch_size, on_batch=on_batch
    ).tolist()
    scores: list[list[float]] = [[] for _ in examples]
    for (i, choice), total in zip(pairs, totals, strict=True):
        scores[i].append(total / len(choice) if normalize else total)
    return scores


def choice_accuracy(
    model,
    tokenizer,
    examples: Sequence[dict[str, Any]],
    *,
    normalize: bool = False,
    batch_size: int = 64,
    on_batch: Progress | None = None,
) -> float:
    """Fraction of examples whose highest-scoring choice is ``answer`` (ties go to the first)."""
    if not examples:
        raise AlloyError("multiple choice: no examples to score")
    hits = choice_hits(
        model, tokenizer, examples, normalize=normalize, batch_size=batch_size, on_batch=on_batch
    )
    return sum(hits) / len(examples)


def choice_hits(
    model,
    tokenizer,
    examples: Sequence[dict[str, Any]],
    *,
    normalize: bool = False,
    batch_size: int = 64,
    on_batch: Progress | None = None,
) -> list[bool]:
    """Whether each example's highest-scoring choice is ``answer`` (ties go to the first)."""
    scores = choice_scores(
        model, tokenizer, examples, normalize=normalize, batch_size=batch_size, on_batch=on_batch
    )
    return [
        max(range(len(row)), key=row.__getitem__) == example["answer"]
        for row, example in zip(scores, examples, strict=True)
    ]


def sliding_windows(length: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """``(begin, end, scored)`` windows over ``length`` tokens: each token but the first is scored
    once, as one of the last ``scored`` tokens of a window.

    Windows start every ``stride`` tokens (at most ``window - 1``, so that consecutive windows
    overlap and no token is left without context); every window but the first scores only the
    tokens past the previous window, each with at least ``window - stride`` tokens of context:
    the Hugging Face perplexity recipe.
    """
    stride = max(1, min(stride, window - 1))
    windows = []
    previous_end = 0
    for begin in range(0, length, stride):
        end = min(begin + window, length)
        windows.append((begin, end, min(end - previous_end, end - begin - 1)))
        previous_end = end
        if end == length:
            break
    return windows


def perplexity(
    model,
    tokenizer,
    text: str,
    *,
    window: int | None = None,
    stride: int | None = None,
    batch_size: int = 64,
    limit: int | None = None,
    seed: int | None = None,
    on_batch: Progress | None = None,
) -> tuple[float, int]:
    """``(perplexity, tokens scored)`` of ``text`` over sliding windows.

    ``window`` defaults to the model's context (at most 1024 tokens) and ``stride`` to half of
    it; ``limit`` scores only some windows (see :func:`~alloykit.evaluate.tasks.select`).
    """
    tokens = tokenizer(text, verbose=False)["input_ids"]
    if len(tokens) < 2:
        raise AlloyError("perplexity: the text has fewer than two tokens")
    window = window or min(getattr(model.config, "max_position_embeddings", 1024), 1024)
    stride = stride or max(1, window // 2)
    windows = select(sliding_windows(len(tokens), window, stride), limit, seed)
    totals = continuation_logprobs(
        model,
        [tokens[begin:end] for begin, end, _ in windows],
        [count for _, _, count in windows],
        batch_size=batch_size,
        on_batch=on_batch,
    )
    count = sum(count for _, _, count in windows)
    return math.exp(-float(totals.sum()) / count), count


def _batches(order: list[int], scored: Sequence[int], batch_size: int, vocab: int):
    """Consecutive runs of ``order``: at most ``batch_size`` rows, logits within the budget."""
    batch: list[int] = []
    keep = 0
    for index in order:
        grown = max(keep, scored[index] + 1)
        if batch and (
            len(batch) == batch_size
            or (len(batch) + 1) * grown * vocab * 4 * 2 > LOGITS_BUDGET_BYTES
        ):
            yield batch
            batch, grown = [], scored[index] + 1
        batch.append(index)
        keep = grown
    if batch:
        yield batch
