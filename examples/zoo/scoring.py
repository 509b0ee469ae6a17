"""Batched greedy exact match, used until alloykit.evaluate provides it."""

from __future__ import annotations

from collections.abc import Sequence

import torch


@torch.no_grad()
def generate_answers(
    model, tokenizer, prompts: Sequence[str], *, max_new_tokens: int, batch_size: int = 64
) -> list[str]:
    answers: list[str] = []
    tokenizer.padding_side = "left"
    for start in range(0, len(prompts), batch_size):
        batch = tokenizer(
            list(prompts[start : start + batch_size]), return_tensors="pt", padding=True
        ).to(model.device)
        output = model.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        for row in output[:, batch["input_ids"].shape[1] :].tolist():
            if tokenizer.eos_token_id in row:
                row = row[: row.index(tokenizer.eos_token_id)]
            text = tokenizer.decode(row, skip_special_tokens=True)
            answers.append(text.split("\n", 1)[0].strip())
    return answers


def exact_match(
    model,
    tokenizer,
    examples: Sequence[dict[str, str]],
    *,
    max_new_tokens: int,
    batch_size: int = 64,
) -> float:
    prompts = [example["prompt"] for example in examples]
    answers = generate_answers(
        model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size
    )
    right = sum(a == e["answer"].strip() for a, e in zip(answers, examples))
    return right / len(examples)
