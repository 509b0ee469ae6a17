"""Merge kernels (pure tensor functions) and their registry. Imports only torch."""

from alloykit.methods import (  # noqa: F401  (importing a module registers its kernels)
    karcher,
    linear,
    model_stock,
    nearswap,
    sce,
    spherical,
    task_vectors,
)
from alloykit.methods.registry import (
    REQUIRED,
    BasePolicy,
    Method,
    Param,
    Scope,
    all_methods,
    get_method,
    method_names,
)

__all__ = [
    "REQUIRED",
    "BasePolicy",
    "Method",
    "Param",
    "Scope",
    "all_methods",
    "get_method",
    "method_names",
]
