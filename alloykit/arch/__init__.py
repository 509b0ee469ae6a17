"""Architecture knowledge inferred from tensor names and config.json."""

from alloykit.arch.layers import (
    LayerName,
    Section,
    count_layers,
    layer_config_keys,
    parse_layer_name,
    section_of,
    tied_embeddings,
)

__all__ = [
    "LayerName",
    "Section",
    "count_layers",
    "layer_config_keys",
    "parse_layer_name",
    "section_of",
    "tied_embeddings",
]
