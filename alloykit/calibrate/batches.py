"""Examples as token ids, and token ids as padded batches with their attention mask."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from alloykit.calibrate.examples import Example
from alloykit.errors import CheckpointError


@dataclass(frozen=True)
class Encoded:
    """One example's token ids and the index of its first scored (target) token."""

    ids: list[int]
    first_scored: int


def encode(tokenizer, examples: list[Example], max_length: int | None = None) -> list[Encoded]:
    """``context + target`` token ids per example (the tokenizer's special tokens before the
    context, or before a target without context), cut at ``max_length``."""
    encoded = []
    for example in examples:
        if example.context:
            context = tokenizer(example.context)["input_ids"]
            target = tokenizer(example.target, add_special_tokens=False)["input_ids"]
        else:
            context, target = [], tokenizer(example.target)["input_ids"]
        ids = context + target
        encoded.append(Encoded(ids[:max_length] if max_length else ids, max(len(context), 1)))
    return encoded


def check_vocabulary(sequences: list[Encoded], model, model_name: str) -> None:
    """Refuse token ids past the model's input embeddings: a tokenizer of another model would
    otherwise fail deep inside the forward pass with an index error."""
    rows = model.get_input_embeddings().num_embeddings
    largest = max((max(example.ids) for example in sequences if example.ids), default=-1)
    if largest >= rows:
        raise CheckpointError(
            f"model {model_name}: its tokenizer gives token id {largest}, past the {rows} rows "
            "of the model's input embeddings",
            "give the model directory the tokenizer it was trained with",
        )


def padded(
    rows: list[list[int]], pad_id: int | None, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` of ``rows`` padded on the right (mask: 1 = real)."""
    width = max(len(ids) for ids in rows)
    input_ids = torch.full((len(rows), width), pad_id if pad_id is not None else 0)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for row, ids in enumerate(rows):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        mask[row, : len(ids)] = 1
    return input_ids.to(device), mask.to(device)
