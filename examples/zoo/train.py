"""The zoo's model and its two training loops: pretraining on text, fine-tuning on one skill.

Fine-tuning is the ordinary loop of real fine-tunes: it starts from the released base, uses
AdamW at a moderate learning rate for a limited number of steps and puts the loss on the
answer tokens only. Nothing in it keeps experts close to the base or to each other: whether
their task vectors merge is a property of the base.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase


@dataclass(frozen=True)
class ModelShape:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    max_positions: int = 256


@dataclass(frozen=True)
class Schedule:
    steps: int
    batch_size: int
    learning_rate: float
    warmup: int
    weight_decay: float = 0.0
    min_lr_ratio: float = 0.1

    def learning_rate_at(self, step: int) -> float:
        """Linear warm-up, then cosine decay to ``min_lr_ratio`` of the peak."""
        if step < self.warmup:
            return self.learning_rate * (step + 1) / self.warmup
        progress = (step - self.warmup) / max(1, self.steps - self.warmup)
        cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return self.learning_rate * (self.min_lr_ratio + (1 - self.min_lr_ratio) * cosine)


def new_model(shape: ModelShape, tokenizer: PreTrainedTokenizerBase, seed: int) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        max_position_embeddings=shape.max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def encode_stream(tokenizer: PreTrainedTokenizerBase, documents: Sequence[str]) -> torch.Tensor:
    """All documents as one token stream, each opened by BOS and closed by EOS."""
    encodings = tokenizer.backend_tokenizer.encode_batch(list(documents))
    ids: list[int] = []
    for encoding in encodings:
        ids.extend(encoding.ids)
        ids.append(tokenizer.eos_token_id)
    return torch.tensor(ids, dtype=torch.long)


def encode_examples(
    tokenizer: PreTrainedTokenizerBase, examples: Sequence[dict[str, str]]
) -> list[tuple[list[int], list[int]]]:
    """(prompt ids with BOS, answer ids ending with the newline) for each example."""
    prompts = tokenizer([example["prompt"] for example in examples])["input_ids"]
    answers = tokenizer(
        [f" {example['answer']}\n" for example in examples], add_special_tokens=False
    )["input_ids"]
    return list(zip(prompts, answers, strict=True))


def _windows(stream: torch.Tensor, rows: int, length: int, generator: torch.Generator):
    starts = torch.randint(0, len(stream) - length, (rows,), generator=generator)
    return torch.stack([stream[start : start + length] for start in starts.tolist()])


def _step(model, optimizer, schedule: Schedule, step: int, loss: torch.Tensor) -> None:
    for group in optimizer.param_groups:
        group["lr"] = schedule.learning_rate_at(step)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _optimizer(model, schedule: Schedule) -> torch.optim.Optimizer:
    return torch.optim.AdamW(
        model.parameters(),
        lr=schedule.learning_rate,
        betas=(0.9, 0.98),
        weight_decay=schedule.weight_decay,
    )


def pretrain(
    model: LlamaForCausalLM,
    stream: torch.Tensor,
    schedule: Schedule,
    *,
    length: int,
    seed: int,
    log: Callable[[str], None] = print,
    after_step: Callable[[int], None] | None = None,
) -> None:
    """Next-token prediction on random windows of ``stream``; ``after_step(steps_done)``
    runs after each step (a probe may evaluate there; it must leave the model in train mode)."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = _optimizer(model, schedule)
    model.train()
    for step in range(schedule.steps):
        batch = _windows(stream, schedule.batch_size, length, generator).to(model.device)
        loss = model(input_ids=batch, labels=batch).loss
        _step(model, optimizer, schedule, step, loss)
        if step % 50 == 0 or step == schedule.steps - 1:
            log(f"pretrain step {step}: loss {loss.item():.3f}")
        if after_step is not None:
            after_step(step + 1)
    model.eval()


def _task_batch(
    pairs: Sequence[tuple[list[int], list[int]]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    length = max(len(prompt) + len(answer) for prompt, answer in pairs)
    ids = torch.full((len(pairs), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(pairs), length), dtype=torch.long)
    labels = torch.full((len(pairs), length), -100, dtype=torch.long)
    for row, (prompt, answer) in enumerate(pairs):
        sequence = prompt + answer
        ids[row, : len(sequence)] = torch.tensor(sequence)
        mask[row, : len(sequence)] = 1
        labels[row, len(prompt) : len(sequence)] = torch.tensor(answer)
    return ids, mask, labels


def _shifted_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100
    )


def finetune(
    model: LlamaForCausalLM,
    pairs: Sequence[tuple[list[int], list[int]]],
    schedule: Schedule,
    *,
    pad_id: int,
    seed: int,
    stop: Callable[[int], bool] | None = None,
    log: Callable[[str], None] = print,
) -> int:
    """Answer-only loss on ``pairs`` (works for a plain model or a PEFT-wrapped one).

    Runs ``schedule.steps`` steps or until ``stop(steps_done)`` says so; returns the steps run.
    """
    rng = random.Random(seed)
    optimizer = _optimizer(model, schedule)
    order: list[int] = []
    for step in range(schedule.steps):
        model.train()
        if len(order) < schedule.batch_size:
            order.extend(rng.sample(range(len(pairs)), len(pairs)))
        chosen = [pairs[index] for index in order[: schedule.batch_size]]
        del order[: schedule.batch_size]
        ids, mask, labels = _task_batch(chosen, pad_id)
        device = model.device
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        loss = _shifted_loss(logits, labels.to(device))
        _step(model, optimizer, schedule, step, loss)
        if step % 50 == 0 or step == schedule.steps - 1:
            log(f"finetune step {step}: loss {loss.item():.3f}")
        if stop is not None and stop(step + 1):
            model.eval()
            return step + 1
    model.eval()
    return schedule.steps
