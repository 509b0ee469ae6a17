"""LoRA adapters: extract them from fine-tunes (SVD), merge them in delta-W space, apply them.

See docs/lora.md.
"""

from alloykit.lora.adapter import LoraAdapter, open_adapter
from alloykit.lora.apply import apply_adapter
from alloykit.lora.extract import ExtractOptions, ExtractResult, extract_adapter
from alloykit.lora.source import AdaptedSource, open_adapted

__all__ = [
    "AdaptedSource",
    "ExtractOptions",
    "ExtractResult",
    "LoraAdapter",
    "apply_adapter",
    "extract_adapter",
    "open_adapted",
    "open_adapter",
]
