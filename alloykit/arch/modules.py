"""A model's modules: the parts a ``modules:`` recipe merges separately (mergekit's
``MergeConfiguration.modules`` over its architecture's module definitions).

mergekit declares modules per family in JSON (``text_decoder``, ``vision_tower``,
``multi_modal_projector`` for Qwen2-VL, Mistral 3, Gemma 3; one ``default`` module for a text
model). Here they are recognised by tensor-name prefix, so any family laid out like Llava or
Qwen2-VL is covered, in the legacy and the current transformers layout. Every tensor belongs
to exactly one module: the first whose prefixes match it, else the text decoder.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

DEFAULT_MODULE = "default"
TEXT_DECODER = "text_decoder"


@dataclass(frozen=True)
class ModelModule:
    """One module: a name, the tensor-name prefixes it owns, and where config.json keeps its
    layer count (``vision_config``; ``None``: the main stack's keys, top or ``text_config``)."""

    name: str
    prefixes: tuple[str, ...]
    config_key: str | None = None

    def owns(self, tensor_name: str) -> bool:
        return tensor_name.startswith(self.prefixes)


# Tried in order; the text decoder takes every tensor these leave.
_TOWER_MODULES = (
    ModelModule(
        "multi_modal_projector",
        (
            "multi_modal_projector.",
            "model.multi_modal_projector.",
            "visual.merger.",
            "model.visual.merger.",
        ),
    ),
    ModelModule(
        "vision_tower",
        (
            "vision_tower.",
            "model.vision_tower.",
            "visual.",
            "model.visual.",
            "vision_model.",
            "model.vision_model.",
        ),
        config_key="vision_config",
    ),
)


@dataclass(frozen=True)
class ModuleLayout:
    """The modules of one checkpoint: the text decoder (the catch-all), then the towers."""

    modules: tuple[ModelModule, ...]

    @property
    def names(self) -> list[str]:
        return [module.name for module in self.modules]

    def get(self, name: str) -> ModelModule | None:
        return next((module for module in self.modules if module.name == name), None)

    def module_of(self, tensor_name: str) -> ModelModule:
        """The one module that owns ``tensor_name``."""
        for module in self.modules:
            if module.prefixes and module.owns(tensor_name):
                return module
        return next((m for m in self.modules if not m.prefixes), self.modules[0])


def module_layout(tensor_names: Iterable[str]) -> ModuleLayout:
    """The modules present in a checkpoint with these tensors: ``text_decoder`` for the
    tensors no tower owns, then the towers that own any; a model without towers has one module,
    ``default`` (mergekit's name for a single-module architecture)."""
    names = list(tensor_names)
    towers = tuple(m for m in _TOWER_MODULES if any(m.owns(n) for n in names))
    claimed = [n for n in names if not any(m.owns(n) for m in towers)]
    if not towers:
        return ModuleLayout((ModelModule(DEFAULT_MODULE, ()),))
    rest = (ModelModule(TEXT_DECODER, ()),) if claimed else ()
    return ModuleLayout(rest + towers)


_MODULE_COUNT_KEYS = ("num_hidden_layers", "depth", "num_layers")


def set_module_layer_count(holder: dict[str, Any], count: int) -> bool:
    """Write ``count`` wherever a tower's config (``vision_config``) keeps its depth;
    False if it keeps none."""
    keys = [key for key in _MODULE_COUNT_KEYS if isinstance(holder.get(key), int)]
    for key in keys:
        holder[key] = count
    return bool(keys)
