"""Layer numbering, sections and per-layer config entries, inferred rather than declared.

Decoder and encoder checkpoints of the common families name their blocks
``<prefix>.<container>.<index>.<rest>`` (``model.layers.3.mlp.up_proj.weight``,
``transformer.h.3.attn.c_attn.weight``, ``bert.encoder.layer.3.output.dense.weight``). Everything
outside the blocks is either before them (embeddings) or after them (final norm, heads).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any

_LAYER = re.compile(
    r"^(?P<prefix>(?:.*?\.)?(?:layers|layer|h|blocks|block)\.)(?P<index>\d+)\.(?P<rest>.+)$"
)
_EMBEDDING_HINTS = ("embed", "wte", "wpe", "word_embeddings", "position_embeddings")
_LAYER_COUNT_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
_TIE_DEFAULT_TRUE = {"gpt2", "gemma", "gemma2", "gemma3_text", "bert", "roberta", "gpt_neo", "phi"}


class Section(int, Enum):
    """Where a tensor sits in the network; sorting by it gives input-to-output order."""

    PRE = 0
    LAYER = 1
    POST = 2


@dataclass(frozen=True)
class LayerName:
    """A tensor name split around its layer index."""

    prefix: str
    index: int
    rest: str

    def with_index(self, index: int) -> str:
        return f"{self.prefix}{index}.{self.rest}"


def parse_layer_name(name: str) -> LayerName | None:
    match = _LAYER.match(name)
    if match is None:
        return None
    return LayerName(match["prefix"], int(match["index"]), match["rest"])


def section_of(name: str) -> Section:
    if parse_layer_name(name) is not None:
        return Section.LAYER
    lowered = name.lower()
    return Section.PRE if any(h in lowered for h in _EMBEDDING_HINTS) else Section.POST


def sort_key(name: str) -> tuple[int, int, str]:
    """Input-to-output order: embeddings, blocks by index, then final norm and heads."""
    layer = parse_layer_name(name)
    if layer is not None:
        return (Section.LAYER, layer.index, layer.rest)
    return (section_of(name), 0, name)


def count_layers(config: dict[str, Any], names: Iterable[str]) -> int:
    """Number of blocks: from config.json when it says, else from the tensor names."""
    for key in _LAYER_COUNT_KEYS:
        value = config.get(key)
        if isinstance(value, int) and value > 0:
            return value
    indices = [layer.index for n in names if (layer := parse_layer_name(n)) is not None]
    return max(indices) + 1 if indices else 0


def layer_count_key(config: dict[str, Any]) -> str:
    for key in _LAYER_COUNT_KEYS:
        if key in config:
            return key
    return "num_hidden_layers"


def layer_config_keys(config: dict[str, Any], num_layers: int) -> list[str]:
    """Config entries that hold one value per layer (``layer_types``, per-layer head counts...)."""
    if num_layers <= 1:
        return []
    return [
        key
        for key, value in config.items()
        if isinstance(value, list) and len(value) == num_layers and key != "architectures"
    ]


def tied_embeddings(config: dict[str, Any]) -> bool:
    value = config.get("tie_word_embeddings")
    if isinstance(value, bool):
        return value
    return config.get("model_type") in _TIE_DEFAULT_TRUE
