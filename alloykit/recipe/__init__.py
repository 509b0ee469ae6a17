"""Merge recipes: YAML (alloykit's or mergekit's format) → validated, resolvable objects."""

from alloykit.recipe.load import load_recipe
from alloykit.recipe.model import (
    ConditionalValue,
    ModelInput,
    ModuleSpec,
    Parameters,
    ParamSetting,
    Recipe,
    Scalar,
    SliceSpec,
)
from alloykit.recipe.resolve import (
    relative_depth,
    resolve_parameters,
    slice_index_outside_layers,
)

__all__ = [
    "ConditionalValue",
    "ModelInput",
    "ModuleSpec",
    "ParamSetting",
    "Parameters",
    "Recipe",
    "Scalar",
    "SliceSpec",
    "load_recipe",
    "relative_depth",
    "resolve_parameters",
    "slice_index_outside_layers",
]
