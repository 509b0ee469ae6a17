"""RegMean++: RegMean layer by layer, each layer's inputs taken from the merged layers below.

RegMean++: Enhancing Effectiveness and Generalization of Regression Mean for Model Merging,
Nguyen et al. 2025 (arXiv:2508.03121). RegMean (:mod:`alloykit.methods.regmean`) computes
every model's Grams on that model's own activations; RegMean++ computes the Grams of layer
``l`` of model ``i`` on the activations that the already *merged* layers ``0..l−1`` produce
from model ``i``'s data, then runs model ``i``'s own layer ``l`` on them, so each merge sees
the inputs it will get in the merged model. Calibration is therefore interleaved with merging,
and this is a driver, not an engine kernel.

Here each (layer, model) step runs the model forward up to layer ``l`` and stops there, with
the merged weights below it: for ``L`` layers and ``n`` models that is ``n·L`` partial forward
passes over the calibration data, ``n·L(L+1)/2`` layer-forwards in all (the reference code
caches each layer's outputs to do ``n·L``; recomputing keeps one model in memory instead of
every model's activations). Embeddings and norms are averaged (the reference's fallback);
linear layers outside the blocks (``lm_head``) are merged with RegMean on the merged blocks'
final outputs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from alloykit.calibrate.batches import check_vocabulary, encode, padded
from alloykit.calibrate.examples import load_examples
from alloykit.calibrate.recorder import ArchitectureError, GramRecorder, linear_weights
from alloykit.checkpoint.source import ModelSource, open_source
from alloykit.errors import AlloyError
from alloykit.methods.regmean import regmean

OnProgress = Callable[[int, int], None]


@dataclass(frozen=True)
class RegMeanPPResult:
    """The merged weights (checkpoint names, the models' dtype) and how they were found."""

    state: dict[str, torch.Tensor]
    layers: int
    forwards: int


class _StopForward(Exception):
    """Raised after the layer being calibrated: nothing above it is needed."""


def decoder_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The module list of the model's blocks (as many as ``config.num_hidden_layers``)."""
    count = getattr(model.config, "num_hidden_layers", None)
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == count:
            return name, module
    raise ArchitectureError(
        f"model {getattr(model, 'name_or_path', '?')}: no list of {count} blocks found",
        "RegMean++ merges a stack of decoder layers; use regmean for this model",
    )


def regmean_pp(
    models: Sequence[str | Path],
    data: Sequence[str | Path],
    *,
    alpha: float = 0.95,
    samples: int = 256,
    seed: int = 0,
    batch_size: int = 16,
    device: str = "cpu",
    on_progress: OnProgress | None = None,
) -> RegMeanPPResult:
    """Merge ``models`` (fine-tunes of one architecture) by RegMean++; ``data[i]`` is the
    calibration data of ``models[i]`` (a task or a JSONL, as :func:`alloykit.calibrate.calibrate`
    reads it)."""
    from alloykit.evaluate.runner import load_model

    if len(models) != len(data) or not models:
        raise AlloyError(
            f"regmean_pp: {len(models)} models but {len(data)} data sets",
            "give one --data per --model, in the same order",
        )
    sources = [open_source(str(m)) for m in models]
    work, tokenizer = load_model(models[0], device)
    work.requires_grad_(False)
    stored = sources[0].tensors
    linears = linear_weights(work, stored, str(models[0]))
    prefix, blocks = decoder_layers(work)
    params = dict(work.named_parameters())
    names = [n for n in params if n in stored]
    batches = [
        _batches(tokenizer, d, samples, seed, batch_size, work, str(models[0])) for d in data
    ]

    merged: dict[str, torch.Tensor] = {}
    outside = [n for n in names if not n.startswith(f"{prefix}.")]
    for name in outside:
        if name not in linears:
            merged[name] = _stack(sources, name).mean(dim=0)
    total = len(blocks) + 1
    forwards = 0
    for index in range(len(blocks)):
        block_names = [n for n in names if n.startswith(f"{prefix}.{index}.")]
        layer_linears = {n: m for n, m in linears.items() if n in block_names}
        grams = []
        for source, model_batches in zip(sources, batches, strict=True):
            _load(work, params, merged, source, block_names)
            grams.append(_grams(work, layer_linears, model_batches, stop=blocks[index]))
            forwards += 1
        for name in block_names:
            gram = torch.stack([g[name] for g in grams]) if name in layer_linears else None
            merged[name] = regmean(_stack(sources, name), None, alpha=alpha, gram=gram)
        if on_progress is not None:
            on_progress(index + 1, total)
    head_linears = {n: m for n, m in linears.items() if n in outside}
    if head_linears:
        grams = []
        for source, model_batches in zip(sources, batches, strict=True):
            _load(work, params, merged, source, list(head_linears))
            grams.append(_grams(work, head_linears, model_batches, stop=None))
            forwards += 1
        for name in head_linears:
            gram = torch.stack([g[name] for g in grams])
            merged[name] = regmean(_stack(sources, name), None, alpha=alpha, gram=gram)
    if on_progress is not None:
        on_progress(total, total)
    state = {n: merged[n].to(sources[0].read(n).dtype) for n in names}
    return RegMeanPPResult(state, len(blocks), forwards)


def _stack(sources: list[ModelSource], name: str) -> torch.Tensor:
    return torch.stack([s.read(name).to(torch.float32) for s in sources])


def _load(work, params, merged, source: ModelSource, own: list[str]) -> None:
    """Merged weights where there are some; ``source``'s own for ``own`` (the layer being
    calibrated) and everything not merged yet."""
    with torch.no_grad():
        for name, parameter in params.items():
            if name in own or name not in merged:
                if name in source.tensors:
                    parameter.copy_(source.read(name))
            else:
                parameter.copy_(merged[name])


def _grams(work, layers: dict[str, nn.Linear], batches, stop: nn.Module | None):
    recorder = GramRecorder(layers)
    handle = None
    if stop is not None:

        def halt(module, args, output):
            raise _StopForward

        handle = stop.register_forward_hook(halt)
    try:
        with recorder, torch.no_grad():
            for input_ids, mask in batches:
                recorder.mask = mask.bool()
                with contextlib.suppress(_StopForward):
                    work(input_ids=input_ids, attention_mask=mask)
    finally:
        if handle is not None:
            handle.remove()
    return recorder.averages()


def _batches(tokenizer, data, samples: int, seed: int, batch_size: int, model, model_name: str):
    device = next(model.parameters()).device
    encoded = encode(tokenizer, load_examples(data, samples, seed).examples)
    check_vocabulary(encoded, model, model_name)
    rows = [example.ids for example in encoded]
    return [
        padded(rows[start : start + batch_size], tokenizer.pad_token_id, device)
        for start in range(0, len(rows), batch_size)
    ]


def card(result: RegMeanPPResult, models: Sequence[str | Path], alpha: float) -> str:
    """The model card of a RegMean++ merge."""
    listed = "\n".join(f"- `{m}`" for m in models)
    return (
        "---\nlibrary_name: transformers\ntags:\n- alloykit\n- merge\n- regmean_pp\n---\n\n"
        "# Merged model (RegMean++)\n\n"
        f"RegMean++ (arXiv:2508.03121) of {len(models)} models, alpha {alpha}: "
        f"{result.layers} blocks merged in order, {result.forwards} partial forward passes "
        f"over the calibration data.\n\n## Models\n\n{listed}\n"
    )
