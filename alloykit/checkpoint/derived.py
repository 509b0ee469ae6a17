"""Sources whose tensors are made when the engine reads them.

Some plans read tensors that are in no checkpoint: an MoE's router weights, an expert's MLP
transformed on the way, a vocabulary tensor laid out in another tokenizer's vocabulary. A
:class:`DerivedSource` presents them to the engine like any other model, so they stream through
the same workers, budget and sink. Its makers run only when a tensor is read (planning imports
no torch).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from alloykit.checkpoint.source import ModelSource, TensorMeta

if TYPE_CHECKING:
    import torch

Maker = Callable[[], "torch.Tensor"]


class DerivedSource(ModelSource):
    """A model whose tensors are computed on read; it has no files of its own."""

    def __init__(self, reference: str, root: Path, tensors: dict[str, tuple[TensorMeta, Maker]]):
        super().__init__(reference, root, [], {}, {n: meta for n, (meta, _) in tensors.items()})
        self._makers = {name: make for name, (_, make) in tensors.items()}

    def add(self, meta: TensorMeta, make: Maker) -> None:
        """One more tensor, made by ``make`` when read."""
        self.tensors[meta.name] = meta
        self._makers[meta.name] = make

    def read(self, name: str) -> torch.Tensor:
        return self._makers[name]()
