"""Run a causal language model on calibration examples and write its statistics file."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from alloykit.calibrate.batches import Encoded, check_vocabulary, encode, padded
from alloykit.calibrate.examples import load_examples
from alloykit.calibrate.fingerprint import fingerprint
from alloykit.calibrate.recorder import FisherAccumulator, GramRecorder, linear_weights
from alloykit.calibrate.statistics_file import KINDS, StatisticsError, metadata, write_statistics
from alloykit.checkpoint.source import open_source

OnProgress = Callable[[int, int], None]
DEFAULT_SAMPLES = 256
DEFAULT_BATCH_SIZE = 16


def check_kinds(kinds: Sequence[str]) -> tuple[str, ...]:
    """``kinds`` in the file's order, each known, none twice."""
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown or not kinds:
        raise StatisticsError(
            f"unknown statistics kind {', '.join(unknown) or '(none given)'}",
            f"use {' and/or '.join(KINDS)}",
        )
    return tuple(kind for kind in KINDS if kind in kinds)


def calibrate(
    model: str | Path,
    data: str | Path,
    out: str | Path,
    *,
    kinds: Sequence[str] = KINDS,
    samples: int = DEFAULT_SAMPLES,
    seed: int = 0,
    device: str = "cpu",
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_progress: OnProgress | None = None,
) -> Path:
    """Record ``kinds`` of statistics of ``model`` (a local Hugging Face directory) on up to
    ``samples`` examples of ``data``, and write them to ``out`` (see
    :mod:`alloykit.calibrate.statistics_file`).

    With ``fisher``, each example runs alone, one forward and one backward (per-example
    gradients are what the empirical Fisher squares; at a few hundred examples this costs
    less than batching them with per-sample-gradient tricks would save), and Grams are
    recorded on the same forward. Grams alone run ``batch_size`` examples at a time without
    gradients. ``on_progress(done, total)`` follows the examples.
    """
    from alloykit.evaluate.runner import load_model

    kinds = check_kinds(kinds)
    chosen = load_examples(data, samples, seed)
    source = open_source(str(model))
    loaded, tokenizer = load_model(model, device)
    model_name = str(model)
    layers = linear_weights(loaded, source.tensors, model_name) if "gram" in kinds else {}
    sequences = encode(tokenizer, chosen.examples, _max_length(loaded))
    check_vocabulary(sequences, loaded, model_name)
    grams = GramRecorder(layers)
    fisher = (
        FisherAccumulator(_stored_parameters(loaded, source.tensors)) if "fisher" in kinds else None
    )
    with grams:
        if fisher is not None:
            tokens = _per_example(loaded, sequences, grams, fisher, on_progress)
        else:
            tokens = _batched(loaded, tokenizer, sequences, grams, batch_size, on_progress)
    statistics = {f"gram:{name}": g for name, g in grams.averages().items()}
    if fisher is not None:
        statistics.update({f"fisher:{name}": f for name, f in fisher.averages().items()})
    meta = metadata(
        fingerprint=fingerprint(source),
        kinds=kinds,
        samples=len(sequences),
        tokens=tokens,
        data=chosen.description,
        seed=seed,
    )
    return write_statistics(Path(out), statistics, meta)


def _max_length(model) -> int:
    return int(getattr(model.config, "max_position_embeddings", None) or 2048)


def _stored_parameters(model, stored) -> dict[str, torch.nn.Parameter]:
    return {
        name: parameter
        for name, parameter in model.named_parameters()
        if name in stored and parameter.is_floating_point()
    }


def _per_example(
    model, sequences: list[Encoded], grams: GramRecorder, fisher: FisherAccumulator, on_progress
) -> int:
    """One forward and backward per example: Grams on the forward, squared gradients after."""
    device = next(model.parameters()).device
    tokens = 0
    for done, example in enumerate(sequences, start=1):
        ids, first_scored = example.ids, example.first_scored
        input_ids = torch.tensor([ids], device=device)
        grams.mask = torch.ones_like(input_ids, dtype=torch.bool)
        tokens += len(ids)
        if first_scored < len(ids):
            logits = model(input_ids=input_ids).logits[0, :-1].float()
            log_probs = torch.log_softmax(logits, dim=-1)
            token_log_probs = log_probs.gather(1, input_ids[0, 1:, None])[:, 0]
            fisher.add(token_log_probs[first_scored - 1 :].sum())
        else:  # nothing left to score after truncation: the Grams still count
            with torch.no_grad():
                model(input_ids=input_ids)
        if on_progress is not None:
            on_progress(done, len(sequences))
    grams.mask = None
    return tokens


def _batched(
    model, tokenizer, sequences: list[Encoded], grams: GramRecorder, batch_size: int, on_progress
) -> int:
    """Grams only: padded batches without gradients, padding masked out of the Grams."""
    device = next(model.parameters()).device
    tokens = 0
    with torch.no_grad():
        for start in range(0, len(sequences), batch_size):
            rows = [example.ids for example in sequences[start : start + batch_size]]
            input_ids, mask = padded(rows, tokenizer.pad_token_id, device)
            grams.mask = mask.bool()
            model(input_ids=input_ids, attention_mask=mask)
            tokens += int(mask.sum())
            if on_progress is not None:
                on_progress(min(start + batch_size, len(sequences)), len(sequences))
    grams.mask = None
    return tokens
