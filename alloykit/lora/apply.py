"""Bake an adapter into a full checkpoint: ``W + scale · B @ A`` per module, the rest copied.

This is a one-model passthrough merge of ``base+adapter``: the merge engine streams the base
tensor by tensor through :class:`~alloykit.lora.source.AdaptedSource` into a
:class:`~alloykit.checkpoint.sink.DirectorySink`, so the output appears atomically, memory is
bounded by the largest module, and config, tokenizer and model card come along as for any merge.
"""

from __future__ import annotations

from pathlib import Path

from alloykit.api import merge


def apply_adapter(
    base: str | Path,
    adapter: str | Path,
    out_dir: str | Path,
    *,
    out_dtype: str | None = None,
    threads: int = 2,
    device: str = "cpu",
    force: bool = False,
    allow_pickle: bool = False,
) -> Path:
    """Write ``base`` with ``adapter`` merged into its weights to ``out_dir``; return its path."""
    recipe: dict[str, object] = {
        "merge_method": "passthrough",
        "models": [{"model": f"{base}+{adapter}"}],
    }
    if out_dtype is not None:
        recipe["out_dtype"] = out_dtype
    return merge(
        recipe, out_dir, threads=threads, device=device, force=force, allow_pickle=allow_pickle
    )
