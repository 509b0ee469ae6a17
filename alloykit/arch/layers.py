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
_DECODER_COUNT_KEYS = ("num_decoder_layers",)  # T5: the decoder's own count, beside num_layers
_NESTED_CONFIGS = ("text_config", "language_config", "llm_config")
_TOWER_HINTS = ("vision", "visual", "image", "audio", "multi_modal_projector")
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


def in_tower(name: str) -> bool:
    """Whether ``name`` belongs to a multimodal model's encoder tower or projector (vision,
    audio), which layer slicing leaves whole: slices select blocks of the language stack."""
    lowered = name.lower()
    return any(hint in lowered for hint in _TOWER_HINTS)


def stack_layer(name: str) -> LayerName | None:
    """The layer of a block of the model's main (language) stack; None outside it, towers
    included."""
    return None if in_tower(name) else parse_layer_name(name)


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
    """Blocks of the main stack: from config.json (or its ``text_config``) when it says, else
    from the tensor names."""
    for holder in config_holders(config):
        for key in _LAYER_COUNT_KEYS:
            value = holder.get(key)
            if isinstance(value, int) and value > 0:
                return value
    indices = [layer.index for n in names if (layer := stack_layer(n)) is not None]
    return max(indices) + 1 if indices else 0


def config_holders(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The config and its nested language-model configs (Llava's and Qwen2-VL's
    ``text_config``), each of which may keep a layer count and per-layer lists."""
    nested = [config[key] for key in _NESTED_CONFIGS if isinstance(config.get(key), dict)]
    return [config, *nested]


def set_layer_count(config: dict[str, Any], count: int) -> None:
    """Write ``count`` blocks wherever the config keeps the main stack's depth: top level,
    nested ``text_config``, and T5's ``num_decoder_layers`` (slices take both stacks' blocks)."""
    keys = (*_LAYER_COUNT_KEYS, *_DECODER_COUNT_KEYS)
    found = False
    for holder in config_holders(config):
        for key in keys:
            if isinstance(holder.get(key), int):
                holder[key] = count
                found = True
    if not found:
        config["num_hidden_layers"] = count


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
