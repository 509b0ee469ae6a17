"""Keyword arguments that keep ``from_pretrained`` local: no code from the Hub.

Since 5.25, transformers defaults to ``use_kernels=True``: it swaps layers for kernels from
the ``kernels`` package, which fetches their code from the Hugging Face Hub. alloykit runs no
remote code unless the user asks for it, and needs no network. That kernel swap also refuses
the ``meta`` device (``ValueError: Unsupported device type 'meta'``), which the output check
(:mod:`alloykit.checkpoint.load_check`) loads onto. Older releases have no such option, and
one that does not know ``use_kernels`` hands it to the model's constructor, which fails, so
it is passed only where transformers has it.
"""

from __future__ import annotations

from typing import Any


def local_load_options() -> dict[str, Any]:
    """``from_pretrained`` keyword arguments that turn Hub kernels off where they exist."""
    from transformers import PreTrainedModel

    return {"use_kernels": False} if hasattr(PreTrainedModel, "set_use_kernels") else {}
