"""Exact match by teacher forcing: the prompts and the expected answers in two forward passes
per batch, instead of one step per answer token.

Greedy generation answers a prompt with the expected answer exactly when, fed the prompt and
the answer's tokens, the model's argmax at every answer position is the next answer token and
then a stop (a token holding a newline, or EOS), or its token budget ends first. So the greedy
tokens are known up to the first position where the argmax leaves the answer, and if that token
is a stop (or the budget's last), they are cut and compared by generation's own rules
(:func:`~alloykit.evaluate.generation.answer_text`). A batch's prompts go through first (as
generation's prefill); the rows whose first greedy token is the answer's go on with the whole
answer in one pass over the prompts' KV cache, so a wrong first answer token costs nothing more.

An example is left undecided (``None``), for generation to settle, when

- the argmax leaves the answer's tokens but the text so far may still end as the answer:
  another tokenization of the same text, whitespace the strip removes, a special token that
  decoding skips, a partial UTF-8 character (such an example is forced again with the tokens
  known so far and the rest of the answer after them, up to :data:`ROUNDS` times); or
- the top two logits at a position the verdict rests on are within float noise of each other:
  a padded batch and incremental decoding over the KV cache round differently, so a near tie
  could go either way.

It relies on decoding more tokens only appending text (up to whitespace, and up to a partial
UTF-8 character, which leaves the example undecided), as byte-level BPE, SentencePiece and
WordPiece decoders do.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from alloykit.evaluate.generation import (
    answer_text,
    cache_argument,
    cache_of,
    check_batch_size,
    encode_prompts,
    eos_ids,
    eval_mode,
    left_padded,
    length_batches,
    model_device,
    stop_table,
    token_budgets,
)

ROUNDS = 3
"""Forward passes an example gets before it is left to generation."""

TIE_ULPS = 16
"""A top logit that wins by at most this many units in the last place (of its dtype, relative to
its magnitude) is a near tie: batched and incremental forward passes may order it differently."""


@torch.inference_mode()
def forced_verdicts(
    model,
    tokenizer,
    examples: Sequence[dict],
    *,
    max_new_tokens: int | Sequence[int],
    batch_size: int = 64,
    on_batch: Callable[[int, int], None] | None = None,
) -> list[bool | None]:
    """Whether greedy generation would answer each ``{"prompt", "answer"}`` example with its
    stripped answer, or ``None`` where only generation can tell (see the module docstring).
    ``max_new_tokens`` is one token budget for all examples, or each example's own: examples
    of several tasks, each with its task's budget, then share batches.

    An example whose argmax leaves the answer's tokens for text that may still become the
    answer is forced again, with the tokens known so far and the rest of the answer tokenized
    after them, at most :data:`ROUNDS` times in all. Examples are batched by the lengths of
    their prompts and answers (:func:`~alloykit.evaluate.generation.length_batches`: little
    padding, few passes); verdicts come back in the order of ``examples``.
    ``on_batch(rows, total)`` reports the first round's progress.
    """
    budgets = token_budgets(max_new_tokens, len(examples))
    check_batch_size(batch_size)
    prompts = encode_prompts(tokenizer, [example["prompt"] for example in examples])
    targets = [str(example["answer"]).strip() for example in examples]
    texts = [
        ("" if example["prompt"][-1:].isspace() else " ") + target if target else ""
        for example, target in zip(examples, targets, strict=True)
    ]
    candidates = dict(enumerate(_tokenized(tokenizer, texts)))
    rules = _StopRules.of(model, tokenizer, budgets)
    verdicts: list[bool | None] = [None] * len(examples)
    with eval_mode(model):
        for round_number in range(ROUNDS):
            known = _force(
                model,
                tokenizer,
                prompts,
                candidates,
                targets,
                rules,
                verdicts,
                batch_size,
                on_batch if round_number == 0 else None,
            )
            rests = [_rest_of(targets[i], _text(tokenizer, known[i])) for i in known]
            tokenized = _tokenized(tokenizer, rests)
            candidates = {i: known[i] + rest for i, rest in zip(known, tokenized, strict=True)}
            if not candidates:
                break
    return verdicts


@dataclass(frozen=True)
class _StopRules:
    """Generation's stopping rules: stop tokens (newline or EOS), EOS, and each example's token
    budget."""

    stops: set[int]
    eos: set[int]
    budgets: list[int]

    @classmethod
    def of(cls, model, tokenizer, budgets: list[int]) -> _StopRules:
        table = stop_table(model, tokenizer)
        stops = set(table.nonzero().flatten().tolist())
        return cls(stops, set(eos_ids(model, tokenizer)), budgets)


def _force(
    model,
    tokenizer,
    prompts: list[list[int]],
    candidates: dict[int, list[int]],
    targets: list[str],
    rules: _StopRules,
    verdicts: list[bool | None],
    batch_size: int,
    on_batch: Callable[[int, int], None] | None,
) -> dict[int, list[int]]:
    """Force each ``prompt + candidate``: fills ``verdicts`` where that decides, and returns the
    greedy tokens known so far where the text may still become the target.

    A batch's prompts go through first; only the rows whose first greedy token is the
    candidate's first (not a stop) go on with their candidate over the prompts' KV cache, so a
    wrong first token costs no more than generation's prefill."""
    candidates = {i: tokens[: rules.budgets[i] - 1] for i, tokens in candidates.items()}
    known = {}

    def settle(i: int, predicted: list[int], clear: list[bool]) -> None:
        verdict, tokens = _verdict(
            tokenizer, predicted, clear, candidates[i], targets[i], rules, rules.budgets[i]
        )
        verdicts[i] = verdict
        if tokens is not None:
            known[i] = tokens

    def shape(i: int) -> tuple[int, int]:
        return len(prompts[i]), len(candidates[i])

    for rows in length_batches(list(candidates), shape, batch_size):
        first, first_clear, prefix = _prefill(model, [prompts[i] for i in rows])
        onward = []
        for row, i in enumerate(rows):
            token, candidate = int(first[row]), candidates[i]
            if (
                first_clear[row]
                and candidate
                and token == candidate[0]
                and token not in rules.stops
            ):
                onward.append(row)
            else:
                settle(i, [token], [bool(first_clear[row])])
        if onward:
            rest = [candidates[rows[row]] for row in onward]
            predicted, clear = _continued(model, prefix, onward, rest)
            for k, row in enumerate(onward):
                length = len(rest[k])
                settle(
                    rows[row],
                    [int(first[row]), *predicted[k, :length].tolist()],
                    [True, *clear[k, :length].tolist()],
                )
        if on_batch is not None:
            on_batch(len(rows), len(candidates))
    return known


@dataclass
class _Prefix:
    """The prompts' KV cache, attention mask and position ids after a prefill."""

    cache: Any
    mask: torch.Tensor
    positions: torch.Tensor


def _prefill(model, prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, _Prefix]:
    """The greedy first token after each left-padded prompt, whether it wins clearly, and the
    prompts' KV cache."""
    device = model_device(model)
    input_ids, mask, positions = left_padded(prompts, 0, device)
    parameters = inspect.signature(model.forward).parameters
    extra = {"logits_to_keep": 1} if "logits_to_keep" in parameters else {}
    out = model(
        input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True, **extra
    )
    token, clear = _ranked(out.logits[:, -1])
    return token, clear, _Prefix(cache_of(out), mask, positions)


def _continued(
    model, prefix: _Prefix, rows: list[int], continuations: list[list[int]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The argmax after each token of each continuation (right-padded) of the prompts ``rows``
    of ``prefix``, and whether it wins clearly. A cache that cannot drop rows (an older
    transformers' tuples) runs every prompt on, with an empty continuation for the others."""
    device = prefix.mask.device
    if hasattr(prefix.cache, "batch_select_indices"):
        running = rows
        prefix.cache.batch_select_indices(torch.tensor(rows, device=device))
    else:
        running = list(range(len(prefix.mask)))
    width = max(len(tokens) for tokens in continuations)
    input_ids = torch.zeros((len(running), width), dtype=torch.long)
    mask = torch.zeros((len(running), width), dtype=torch.long)
    at = {row: k for k, row in enumerate(running)}
    for row, tokens in zip(rows, continuations, strict=True):
        input_ids[at[row], : len(tokens)] = torch.tensor(tokens)
        mask[at[row], : len(tokens)] = 1
    index = torch.tensor(running, device=device)
    positions = prefix.positions[index, -1:] + 1 + torch.arange(width, device=device)
    out = model(
        input_ids=input_ids.to(device),
        attention_mask=torch.cat([prefix.mask[index], mask.to(device)], dim=1),
        position_ids=positions,
        use_cache=True,
        **{cache_argument(model): prefix.cache},
    )
    token, clear = _ranked(out.logits)
    kept = [at[row] for row in rows]
    return token[kept], clear[kept]


def _ranked(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The argmax token at each position, and whether it beats the runner-up by more than a
    near tie."""
    top = logits.float().topk(2, dim=-1)
    best, runner_up = top.values.unbind(-1)
    tolerance = TIE_ULPS * torch.finfo(logits.dtype).eps * best.abs().clamp(min=1.0)
    return top.indices[..., 0].cpu(), (best - runner_up > tolerance).cpu()


def _tokenized(tokenizer, texts: list[str]) -> list[list[int]]:
    """Each text's tokens on their own (no special tokens); an empty text has none."""
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    return [tokens if text else [] for tokens, text in zip(encoded, texts, strict=True)]


def _verdict(
    tokenizer,
    predicted: list[int],
    clear: list[bool],
    candidate: list[int],
    target: str,
    rules: _StopRules,
    budget: int,
) -> tuple[bool | None, list[int] | None]:
    """Generation's verdict, within ``budget`` tokens, from the argmax after the prompt and after
    each candidate token (``predicted``, one more than ``candidate``), or ``None`` and, where the
    text may still become the target, the greedy tokens known so far."""
    tokens: list[int] = []
    for position, token in enumerate(predicted):
        if not clear[position]:
            return None, None
        tokens.append(token)
        if token in rules.stops or len(tokens) == budget:
            return answer_text(tokenizer, tokens, rules.stops, rules.eos) == target, None
        if position == len(candidate) or token != candidate[position]:
            break
    text = _text(tokenizer, tokens)
    if "\ufffd" in text:
        return None, None
    if "".join(target.split()).startswith("".join(text.split())):
        return None, tokens
    return False, None


def _text(tokenizer, tokens: list[int]) -> str:
    return tokenizer.decode(tokens, skip_special_tokens=True)


def _rest_of(target: str, text: str) -> str:
    """What of ``target`` follows ``text`` (which it begins, whitespace aside): the text the
    next forced pass continues with (after no whitespace if ``text`` ends with some)."""
    unread, position = len("".join(text.split())), 0
    while unread:
        unread -= not target[position].isspace()
        position += 1
    rest = target[position:]
    return rest.lstrip() if not text or text[-1].isspace() else rest
