"""Vocabulary tensors laid out in the output vocabulary, made when the engine reads them.

One :class:`~alloykit.checkpoint.derived.DerivedSource` per model holds that model's vocabulary
tensors (embeddings, output head) re-indexed by :class:`~alloykit.vocab.rows.Layout`; the merge
method then reads them like any checkpoint's tensors.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from alloykit.checkpoint.derived import DerivedSource, Maker
from alloykit.checkpoint.source import ModelSource, TensorMeta
from alloykit.vocab.rows import DEFAULT, PADDING, Layout

if TYPE_CHECKING:
    import torch


def vocab_reference(model: str) -> str:
    """The plan's name for ``model``'s tensors in the output vocabulary."""
    return f"{model} [output vocabulary]"


def add_vocab_tensor(
    derived: dict[str, DerivedSource],
    sources: Mapping[str, ModelSource],
    out_name: str,
    inputs: Mapping[str, str],
    layout: Layout,
) -> dict[str, str]:
    """Add ``out_name``, as each model (``inputs``: model → its tensor's name) lays it out,
    to the models' derived sources; return model → the derived source's reference."""
    references = {}
    for model, name in inputs.items():
        reference = vocab_reference(model)
        meta = sources[model].tensors[name]
        if reference not in derived:
            derived[reference] = DerivedSource(reference, sources[model].root, {})
        shape = (layout.rows, *meta.shape[1:])
        laid = TensorMeta(out_name, meta.dtype, shape)
        derived[reference].add(laid, _maker(sources, inputs, model, layout))
        references[model] = reference
    return references


def _maker(
    sources: Mapping[str, ModelSource], inputs: Mapping[str, str], model: str, layout: Layout
) -> Maker:
    def make() -> torch.Tensor:
        return laid_out(sources, inputs, model, layout)

    return make


def laid_out(
    sources: Mapping[str, ModelSource], inputs: Mapping[str, str], model: str, layout: Layout
) -> torch.Tensor:
    """``model``'s tensor in the output vocabulary (its stored dtype; defaults and padding
    are computed in float32 and rounded once)."""
    import torch

    read: dict[str, torch.Tensor] = {}

    def tensor(of: str) -> torch.Tensor:
        if of not in read:
            read[of] = sources[of].read(inputs[of])
        return read[of]

    own = tensor(model)
    index = torch.tensor(layout.own[model], dtype=torch.long)
    out = torch.zeros((layout.rows, *own.shape[1:]), dtype=torch.float32)
    kept = index >= 0
    out[kept] = own[index[kept]].to(torch.float32)
    wanted = (index == DEFAULT).nonzero().flatten().tolist()
    picks = [layout.defaults[row] for row in wanted]
    for position in range(max((len(p) for p in picks), default=0)):
        # the k-th pick of every row at once, model by model: each row still adds its picks
        # in order, as one running sum (mergekit's order: the same float32 result)
        by_model: dict[str, tuple[list[int], list[int]]] = {}
        for row, row_picks in zip(wanted, picks, strict=True):
            if position < len(row_picks):
                other, other_row = row_picks[position]
                targets, origins = by_model.setdefault(other, ([], []))
                targets.append(row)
                origins.append(other_row)
        for other, (targets, origins) in by_model.items():
            out[targets] += tensor(other)[origins].to(torch.float32)
    averaged = [row for row, row_picks in zip(wanted, picks, strict=True) if len(row_picks) > 1]
    if averaged:
        counts = torch.tensor([len(layout.defaults[row]) for row in averaged], dtype=torch.float32)
        out[averaged] /= counts.reshape(-1, *([1] * (out.dim() - 1)))
    padding = index == PADDING
    if padding.any():
        out[padding] = out[~padding].mean(dim=0)
    return out.to(own.dtype)
