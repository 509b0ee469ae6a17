"""Sources whose tensors are made when the engine reads them.

An MoE plan reads three kinds of tensors that are in no checkpoint: router weights computed
before the merge, an expert's MLP transformed on the way (noise, Drop-Upcycling), and several
shared experts laid side by side as one wider MLP. A :class:`DerivedSource` presents them to
the engine like any other model (:mod:`alloykit.checkpoint.derived`), so they stream through
the same workers, budget and sink.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from alloykit.checkpoint.derived import DerivedSource, Maker
from alloykit.checkpoint.source import ModelSource, TensorMeta
from alloykit.compose.upcycling import ExpertTransform
from alloykit.dtypes import of_torch


def computed_source(reference: str, root: Path, tensors: dict[str, torch.Tensor]) -> DerivedSource:
    """Tensors already in memory (router weights)."""
    return DerivedSource(
        reference,
        root,
        {
            name: (TensorMeta(name, of_torch(t.dtype), tuple(t.shape)), lambda t=t: t)
            for name, t in tensors.items()
        },
    )


def transformed_source(
    reference: str, source: ModelSource, names: Sequence[str], transform: ExpertTransform
) -> DerivedSource:
    """``source``'s tensors ``names`` passed through ``transform`` (one expert's copy)."""
    return DerivedSource(
        reference,
        source.root,
        {
            name: (source.tensors[name], lambda name=name: transform(name, source.read(name)))
            for name in names
        },
    )


def side_by_side_source(
    reference: str, root: Path, parts: dict[str, tuple[int, Sequence[tuple[ModelSource, str]]]]
) -> DerivedSource:
    """Tensors concatenated from several sources: ``{name: (dim, [(source, tensor), ...])}``.

    Shared experts summed after their MLPs equal one MLP whose intermediate dimension holds
    them all: gate and up projections stacked by rows (dim 0), down projections by columns.
    """
    tensors: dict[str, tuple[TensorMeta, Maker]] = {}
    for name, (dim, pieces) in parts.items():
        metas = [source.tensors[piece] for source, piece in pieces]
        shape = list(metas[0].shape)
        shape[dim] = sum(m.shape[dim] for m in metas)

        def make(dim: int = dim, pieces: Sequence[tuple[ModelSource, str]] = pieces):
            return torch.cat([source.read(piece) for source, piece in pieces], dim=dim)

        tensors[name] = (TensorMeta(name, metas[0].dtype, tuple(shape)), make)
    return DerivedSource(reference, root, tensors)
