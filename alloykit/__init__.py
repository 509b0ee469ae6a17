"""alloykit: build new models out of pretrained checkpoints.

Public API: :func:`merge`, :func:`merge_to_state_dict`, :func:`plan`, :func:`load_recipe`,
:func:`methods`.
"""

from __future__ import annotations

__version__ = "0.1.0"

import gc

# Importing torch creates a couple of hundred thousand objects; the cyclic collector would walk
# them again and again while they are made, and once more after (about 0.4 s of a 3 s start-up
# here), though none of them is garbage. So collection is off during the imports, and what they
# made is then frozen (gc.freeze: kept out of collections until a merge's end unfreezes it).
_collecting = gc.isenabled()
gc.disable()
try:
    from alloykit.api import MergeOptions, merge, merge_to_state_dict, plan
    from alloykit.methods import Method, all_methods
    from alloykit.recipe import load_recipe
finally:
    if _collecting:
        gc.freeze()
        gc.enable()


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
