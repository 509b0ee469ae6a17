"""alloykit: build new models out of pretrained checkpoints.

Public API: :func:`merge`, :func:`merge_to_state_dict`, :func:`plan`, :func:`load_recipe`,
:func:`methods`.
"""

from __future__ import annotations

__version__ = "0.1.0"

from alloykit.quiet_imports import collector_paused

with collector_paused():  # pydantic, typer, numpy: fewer objects than torch, but many
    from alloykit.api import MergeOptions, merge, merge_to_state_dict, plan
    from alloykit.methods import Method, all_methods
    from alloykit.recipe import load_recipe


def methods() -> list[Method]:
    """Every registered merge method with its parameter contract."""
    return all_methods()


__all__ = [
    "MergeOptions",
    "__version__",
    "load_recipe",
    "merge",
    "merge_to_state_dict",
    "methods",
    "plan",
]
