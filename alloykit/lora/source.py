"""``model+adapter``: a base model whose tensors come out with a LoRA adapter applied.

Recipes may name ``path/to/model+path/to/adapter`` wherever a model is expected (as mergekit
does). :func:`open_adapted` opens both by headers and checks that the adapter fits the model;
:class:`AdaptedSource` then reads each tensor of the model and adds ``scale · B @ A`` to it
(or takes it whole from the adapter's ``modules_to_save``), one tensor at a time.
"""

from __future__ import annotations

from pathlib import Path

import torch

from alloykit.checkpoint.safetensors_format import TensorEntry
from alloykit.checkpoint.source import ModelSource, open_source
from alloykit.errors import CheckpointError
from alloykit.lora.adapter import LoraAdapter, open_adapter


class AdaptedSource(ModelSource):
    """A :class:`ModelSource` of ``base`` that applies ``adapter`` on read (same dtypes)."""

    def __init__(self, reference: str, base: ModelSource, adapter: LoraAdapter) -> None:
        super().__init__(
            reference,
            base.root,
            [*base.files, *adapter.files],
            base.config,
            base.tensors,
            base._entries,
            base._pickled,
        )
        self.adapter = adapter

    def read(self, name: str) -> torch.Tensor:
        tensor = super().read(name)
        key = self.adapter.full.get(name)
        if key is not None:
            tensor = self.adapter.read(key).to(tensor.dtype)
        if name in self.adapter.modules:
            tensor = (tensor.float() + self.adapter.delta(name)).to(tensor.dtype)
        return tensor

    def entry(self, name: str) -> TensorEntry | None:
        """Tensors the adapter leaves alone stream from the base's files; the others are
        computed whole by :meth:`read`."""
        touched = name in self.adapter.full or name in self.adapter.modules
        return None if touched else super().entry(name)


def split_reference(reference: str) -> tuple[str, str]:
    """``model+adapter`` → (model, adapter)."""
    model, _, adapter = reference.partition("+")
    if not model or not adapter or "+" in adapter:
        raise CheckpointError(
            f"model {reference!r}: expected MODEL+ADAPTER", "e.g. path/to/base+path/to/adapter"
        )
    return model, adapter


def open_adapted(
    reference: str, *, search_dirs: tuple[Path, ...] = (), allow_pickle: bool = False
) -> AdaptedSource:
    """Open ``model+adapter``; raise CheckpointError when the adapter does not fit the model."""
    model_ref, adapter_ref = split_reference(reference)
    base = open_source(model_ref, search_dirs=search_dirs, allow_pickle=allow_pickle)
    adapter = open_adapter(
        adapter_ref, search_dirs=search_dirs, allow_pickle=allow_pickle, base_config=base.config
    )
    check_adapter_fits(adapter, base)
    return AdaptedSource(reference, base, adapter)


def check_adapter_fits(adapter: LoraAdapter, base: ModelSource) -> None:
    """Every module the adapter changes exists in ``base`` with the same shape."""
    made_for = adapter.config.get("base_model_name_or_path")
    hint = (
        f"the adapter was made for {made_for!r}; apply it to that model"
        if made_for
        else "apply the adapter to the model it was made for"
    )
    wanted = {name: (m.rows, m.cols) for name, m in adapter.modules.items()}
    wanted.update({name: adapter.shape_of(key) for name, key in adapter.full.items()})
    for name, shape in wanted.items():
        meta = base.tensors.get(name)
        if meta is None:
            raise CheckpointError(
                f"adapter {adapter.reference!r} changes {name!r}, which model "
                f"{base.reference!r} does not have",
                hint,
            )
        if tuple(meta.shape) != tuple(shape):
            raise CheckpointError(
                f"adapter {adapter.reference!r} changes {name!r} as {list(shape)}, but it is "
                f"{list(meta.shape)} in model {base.reference!r}",
                hint,
            )
