"""Greedy generation of short answers, batched with left padding.

Our own decoding loop over the KV cache: one prefill per batch, then one token per step for
every row, stopping when every row has produced a newline or EOS. On a tiny llama on CPU it
does 5-20% more prompts per CPU-second than ``model.generate`` with the same stopping rule
(less per-step bookkeeping).

The stopping and cutting rules here (:func:`stop_table`, :func:`answer_text`) are also what
teacher-forced scoring (:mod:`alloykit.evaluate.forced`) reproduces.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch

from alloykit.errors import AlloyError

_STOP_TABLES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@torch.inference_mode()
def generate_answers(
    model,
    tokenizer,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    batch_size: int = 64,
    on_batch: Callable[[int, int], None] | None = None,
) -> list[str]:
    """The greedy continuation of each prompt, cut at the first newline or EOS and stripped.

    Prompts are sorted by token length so that each batch holds similar lengths (less padding);
    answers come back in the order of ``prompts``. ``on_batch(rows, total)`` reports progress.
    """
    if max_new_tokens < 1:
        raise AlloyError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if batch_size < 1:
        raise AlloyError(f"batch_size must be at least 1, got {batch_size}")
    encoded = encode_prompts(tokenizer, prompts)
    stops = stop_table(model, tokenizer)
    eos = set(eos_ids(model, tokenizer))
    stop_ids = set(stops.nonzero().flatten().tolist())
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    answers = [""] * len(prompts)
    with eval_mode(model):
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            generated = _greedy(model, [encoded[i] for i in rows], max_new_tokens, stops)
            for row, tokens in zip(rows, generated.tolist(), strict=True):
                answers[row] = answer_text(tokenizer, tokens, stop_ids, eos)
            if on_batch is not None:
                on_batch(len(rows), len(prompts))
    return answers


def left_padded(
    sequences: Sequence[Sequence[int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask, position_ids)`` for token lists padded on the left
    (built as Python lists and converted once: a tensor per row cost more than the rows)."""
    width = max(len(tokens) for tokens in sequences)
    input_ids = torch.tensor(
        [[pad_id] * (width - len(tokens)) + list(tokens) for tokens in sequences],
        dtype=torch.long,
    ).view(len(sequences), width)
    mask = torch.tensor(
        [[0] * (width - len(tokens)) + [1] * len(tokens) for tokens in sequences],
        dtype=torch.long,
    ).view(len(sequences), width)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return input_ids.to(device), mask.to(device), positions.to(device)


def model_device(model) -> torch.device:
    return next(model.parameters()).device


@contextmanager
def eval_mode(model) -> Iterator[None]:
    """Run ``model`` in eval mode (no dropout), then restore its train/eval mode. A model
    already wholly in eval mode is left alone (switching every module twice per call was a
    measurable part of scoring a small model)."""
    if not any(module.training for module in model.modules()):
        yield
        return
    training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(training)


def answer_text(tokenizer, tokens: list[int], stops: set[int], eos: set[int]) -> str:
    """Decode up to the first stop token (keeping a newline token's text before the newline)."""
    end = next((i for i, token in enumerate(tokens) if token in stops), len(tokens))
    if end < len(tokens) and tokens[end] not in eos:
        end += 1
    text = tokenizer.decode(tokens[:end], skip_special_tokens=True)
    return text.split("\n", 1)[0].strip()


def _greedy(
    model, prompts: list[list[int]], max_new_tokens: int, stops: torch.Tensor
) -> torch.Tensor:
    """Greedy tokens ``[rows, steps]``; a row's tokens after its first stop token are arbitrary."""
    device = model_device(model)
    input_ids, mask, positions = left_padded(prompts, 0, device)
    parameters = inspect.signature(model.forward).parameters
    extra = {"logits_to_keep": 1} if "logits_to_keep" in parameters else {}
    cache_keyword = cache_argument(model)
    out = model(
        input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True, **extra
    )
    done = torch.zeros(len(prompts), dtype=torch.bool, device=device)
    stops = stops.to(device)
    position = positions[:, -1:]
    steps = []
    for step in range(max_new_tokens):
        token = out.logits[:, -1].argmax(-1)
        steps.append(token)
        done |= stops[token]
        if step == max_new_tokens - 1 or bool(done.all()):
            break
        mask = torch.cat([mask, mask.new_ones(len(prompts), 1)], dim=1)
        position = position + 1
        out = model(
            input_ids=token[:, None],
            attention_mask=mask,
            position_ids=position,
            use_cache=True,
            **{cache_keyword: cache_of(out)},
            **extra,
        )
    return torch.stack(steps, dim=1).cpu()


def encode_prompts(tokenizer, prompts: Sequence[str]) -> list[list[int]]:
    encoded = tokenizer(list(prompts))["input_ids"] if prompts else []
    for index, tokens in enumerate(encoded):
        if not tokens:
            raise AlloyError(
                f"prompt {index} is empty after tokenization",
                "give every example a non-empty prompt, or use a tokenizer that adds BOS",
            )
    return encoded


def eos_ids(model, tokenizer) -> list[int]:
    ids: list[int] = []
    config = getattr(model, "generation_config", None)
    for source in (tokenizer.eos_token_id, getattr(config, "eos_token_id", None)):
        for value in source if isinstance(source, list) else [source]:
            if value is not None and value not in ids:
                ids.append(int(value))
    return ids


def stop_table(model, tokenizer) -> torch.Tensor:
    """``table[token]`` is true for EOS and for every token whose text contains a newline."""
    vocab = max(model.get_output_embeddings().weight.shape[0], len(tokenizer))
    cached = _STOP_TABLES.get(tokenizer)
    if cached is None or cached.numel() < vocab:
        texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
        cached = torch.zeros(vocab, dtype=torch.bool)
        cached[[i for i, text in enumerate(texts) if "\n" in text]] = True
        _STOP_TABLES[tokenizer] = cached
    table = cached.clone()
    table[[i for i in eos_ids(model, tokenizer) if i < vocab]] = True
    return table


def cache_argument(model) -> str:
    """The keyword a model's forward takes its KV cache by."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def cache_of(output):
    """The KV cache of a forward pass (``cache`` in transformers 5, ``past_key_values`` before)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values
