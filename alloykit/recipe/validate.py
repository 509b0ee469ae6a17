"""Checks of a whole recipe against its method's contract: base model, counts, required values.

Parameter values were checked one by one while parsing; what is checked here needs the whole
recipe: whether a base model is given where the method needs one, how many models each merge
group holds, whether every required parameter has a value for every model, and that the
sources of a slice line up.
"""

from __future__ import annotations

from alloykit.methods import BasePolicy, Method, Param, Scope
from alloykit.recipe.document import fail
from alloykit.recipe.model import ModelInput, Parameters, Recipe


def check_recipe(recipe: Recipe, method: Method, prefix: str = "") -> None:
    """Raise :class:`RecipeError` for the first structural problem found in ``recipe``
    (a ``modules:`` recipe's modules were checked one by one as they were read, each with
    ``prefix`` ``modules.NAME.`` before its key paths)."""
    if recipe.modules is not None:
        return
    if recipe.models is not None:
        if method.base is BasePolicy.REQUIRED and recipe.base_model is None:
            fail(
                f"{prefix}models" if prefix else "base_model",
                f"merge method {method.name} needs a base_model",
                "add base_model: <the model the others were fine-tuned from>",
            )
        _check_group(
            recipe.models, f"{prefix}models", recipe.base_model, method, [recipe.parameters]
        )
    for index, piece in enumerate(recipe.slices or ()):
        where = f"{prefix}slices[{index}]"
        base = recipe.base_model_for(index)
        if method.base is BasePolicy.REQUIRED and base is None:
            fail(
                where,
                f"merge method {method.name} needs a base_model",
                f"add base_model: at the top level or in {where}",
            )
        uses_base = method.base is not BasePolicy.UNUSED and base is not None
        if uses_base and all(source.model != base for source in piece.sources):
            fail(
                f"{where}.sources",
                f"the base model '{base}' is not among this slice's sources",
                "add it as a source with a layer_range of the same length",
            )
        _check_same_length(piece.sources)
        levels = [piece.parameters, recipe.parameters]
        _check_group(piece.sources, f"{where}.sources", base, method, levels)
    _check_global_required(recipe, method, prefix)


def _check_group(
    inputs: tuple[ModelInput, ...],
    where: str,
    base: str | None,
    method: Method,
    shared_levels: list[Parameters],
) -> None:
    seen: set[str] = set()
    for item in inputs:
        if item.model in seen:
            fail(
                f"{item.key_path}.model",
                f"model '{item.model}' is listed twice in {where}",
                "list each model once per merge; give it the combined parameters",
            )
        seen.add(item.model)
    uses_base = method.base is not BasePolicy.UNUSED and base is not None
    merged = [item for item in inputs if not (uses_base and item.model == base)]
    _check_count(len(merged), where, method, uses_base)
    for item in merged:
        for param in method.params:
            if param.scope is Scope.PER_MODEL and param.required:
                levels = [item.parameters, *shared_levels]
                if not _given(param, levels):
                    fail(
                        f"{item.key_path}.parameters.{param.name}",
                        f"required by merge method {method.name} but not given",
                        f"add {param.name}: <{param.allowed()}> to this model's parameters, "
                        "or once to the top-level parameters:",
                    )


def _check_count(count: int, where: str, method: Method, uses_base: bool) -> None:
    low, high = method.min_models, method.max_models
    if low <= count and (high is None or count <= high):
        return
    if high is None:
        span = f"at least {low}"
    elif high == low:
        span = f"exactly {low}"
    else:
        span = f"{low} to {high}"
    besides = " besides the base model" if uses_base else ""
    noun = "model" if span.endswith(" 1") else "models"
    fail(
        where,
        f"merge method {method.name} takes {span} {noun}{besides}, got {count}",
        "add or remove models, or choose another merge method",
    )


def _check_global_required(recipe: Recipe, method: Method, prefix: str) -> None:
    """A required global parameter needs a top-level value, or one in every slice."""
    for param in method.params:
        if param.scope is not Scope.GLOBAL or not param.required:
            continue
        if param.name in recipe.parameters:
            continue
        slices = recipe.slices or ()
        missing = [i for i, piece in enumerate(slices) if param.name not in piece.parameters]
        if slices and not missing:
            continue
        where = (
            "parameters"
            if len(missing) == len(slices)
            else f"{prefix}slices[{missing[0]}].parameters"
        )
        fail(
            f"{where}.{param.name}",
            f"required by merge method {method.name} but not given",
            f"add {param.name}: <{param.allowed()}> to the top-level parameters:",
        )


def _given(param: Param, levels: list[Parameters]) -> bool:
    return any(param.name in level for level in levels)


def _check_same_length(sources: tuple[ModelInput, ...]) -> None:
    first = sources[0]
    for source in sources[1:]:
        if source.layer_count != first.layer_count:
            fail(
                f"{source.key_path}.layer_range",
                f"spans {source.layer_count} layers but {first.key_path} spans {first.layer_count}",
                "every source of a slice must span the same number of layers",
            )
