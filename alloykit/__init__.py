"""alloykit: build new models out of pretrained checkpoints.

Public API: :func:`merge`, :func:`merge_to_state_dict`, :func:`plan`, :func:`load_recipe`,
:func:`methods`; :class:`Merger` re-merges with new parameters in memory; :func:`merge_method`
defines a merge method (docs/methods-api.md).
"""

from __future__ import annotations

__version__ = "0.1.0"

from alloykit.quiet_imports import collector_paused

with collector_paused():  # pydantic, typer, numpy: fewer objects than torch, but many
    from alloykit.api import MergeOptions, merge, merge_to_state_dict, plan
    from alloykit.merger import Merger
    from alloykit.methods import (
        BasePolicy,
        Method,
        Param,
        PerModel,
        Range,
        Scope,
        all_methods,
        merge_method,
    )
    from alloykit.recipe import load_recipe


def methods() -> list[Method]:
    """Every registered merge method with its parameter contract."""
    return all_methods()


__all__ = [
    "BasePolicy",
    "MergeOptions",
    "Merger",
    "Param",
    "PerModel",
    "Range",
    "Scope",
    "__version__",
    "load_recipe",
    "merge",
    "merge_method",
    "merge_to_state_dict",
    "methods",
    "plan",
]
