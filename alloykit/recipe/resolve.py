"""Which parameter values one tensor of one model gets: levels, filters and depth.

The planner asks, per output tensor and input model, for the method's parameters; the answer
follows mergekit 0.1.5 exactly (see docs/recipes.md, "How a value is chosen").
"""

from __future__ import annotations

from collections.abc import Sequence

from alloykit.errors import RecipeError
from alloykit.methods import BasePolicy, Method, Param, Scope
from alloykit.recipe.model import ModelInput, Parameters, Recipe, Scalar

PerModel = dict[str, tuple[Scalar, ...]]


def relative_depth(layer_offset: int | None, num_layers: int) -> float:
    """The ``t`` at which gradients are read for a tensor (mergekit's rule).

    - A tensor of a transformer block: ``t = layer_offset / (num_layers - 1)``, where
      ``layer_offset`` is the block's position *within its output slice* (0 for the slice's
      first block) and ``num_layers`` the number of blocks that slice spans. With a single
      block, ``t = 1``. A ``models:`` recipe is one slice spanning every block, so there
      ``layer_offset`` is the layer index and ``num_layers`` the model's depth. Each slice
      therefore runs its gradients from 0 to 1 again.
    - Any tensor outside the blocks (embeddings, final norm, ``lm_head``): pass
      ``layer_offset=None``; ``t = 0``, before and after the blocks alike. Which slice's
      parameters apply to them is given by :func:`slice_index_outside_layers`.
    """
    if layer_offset is None:
        return 0.0
    if num_layers > 1:
        return layer_offset / (num_layers - 1)
    return 1.0


def slice_index_outside_layers(recipe: Recipe, *, after_layers: bool) -> int | None:
    """The slice whose sources and parameters apply to a tensor outside the blocks.

    mergekit uses the first slice for tensors before the blocks (embeddings) and the last
    slice for those after them (final norm, ``lm_head``); ``None`` for a ``models:`` recipe.
    """
    if recipe.slices is None:
        return None
    return len(recipe.slices) - 1 if after_layers else 0


def resolve_parameters(
    recipe: Recipe,
    method: Method,
    *,
    tensor_name: str,
    t: float,
    slice_index: int | None,
    model_input: ModelInput | None,
    input_tensor_name: str | None = None,
) -> dict[str, Scalar]:
    """The values of ``method``'s parameters for one model's tensor.

    Returns every global parameter, plus every per-model parameter for ``model_input`` (none
    when ``model_input`` is ``None`` or is the group's base model for a method that uses one:
    the base is not one of the merged models and takes no per-model values).

    Precedence, highest first, as in mergekit:

    - per-model parameters: the model's own ``parameters`` → its slice's ``parameters`` →
      the top-level ``parameters`` → the method's default;
    - global parameters: the slice's ``parameters`` → the top-level ``parameters`` → default.

    A level counts only if it gives a value for this tensor: when none of its filter entries
    matches, the next level is asked. Filters of global parameters see ``tensor_name`` (the
    output tensor); filters of per-model parameters see ``input_tensor_name`` (that model's
    own tensor name, which differs for slices taken from other depths), defaulting to
    ``tensor_name``. ``slice_index`` selects the slice of a ``slices:`` recipe; it must be
    ``None`` for a ``models:`` recipe.
    """
    shared: list[Parameters] = [recipe.parameters]
    if slice_index is not None:
        if recipe.slices is None:
            raise ValueError("slice_index given for a models: recipe")
        shared.insert(0, recipe.slices[slice_index].parameters)
    per_model = model_input is not None and not _is_base(recipe, method, slice_index, model_input)
    values: dict[str, Scalar] = {}
    for param in method.params:
        if param.scope is Scope.GLOBAL:
            values[param.name] = _resolve(param, shared, tensor_name, t, "parameters")
        elif per_model:
            assert model_input is not None
            values[param.name] = _resolve(
                param,
                [model_input.parameters, *shared],
                input_tensor_name or tensor_name,
                t,
                f"{model_input.key_path}.parameters" if model_input.key_path else "parameters",
            )
    return values


def _is_base(recipe: Recipe, method: Method, slice_index: int | None, item: ModelInput) -> bool:
    return method.base is not BasePolicy.UNUSED and item.model == recipe.base_model_for(slice_index)


def _resolve(
    param: Param, levels: list[Parameters], tensor_name: str, t: float, where: str
) -> Scalar:
    for level in levels:
        setting = level.get(param.name)
        if setting is None:
            continue
        value = setting.resolve(tensor_name, t)
        if value is None:
            continue
        return _finish(param, value, setting.key_path, tensor_name, t)
    if param.required:
        raise RecipeError(
            f"{where}.{param.name}: no value applies to tensor {tensor_name}",
            "end its list of filter entries with one without filter:, or give a top-level value",
        )
    return param.default


def _finish(param: Param, value: Scalar, key_path: str, tensor_name: str, t: float) -> Scalar:
    """The interpolated value in the parameter's type.

    Every knot was range-checked at load time, and interpolation stays between knots up to
    rounding, so floats are not checked again (a last-bit overshoot must not fail). Integer
    parameters must land on a whole number, as in mergekit.
    """
    if param.type is int and not isinstance(value, bool):
        try:
            return param.check(value)
        except ValueError as error:
            raise RecipeError(
                f"{key_path}: {error} for tensor {tensor_name} (t={t:g})",
                f"'{param.name}' takes whole numbers; use a gradient whose steps land on them",
            ) from None
    if param.type is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


class ParameterResolver:
    """:func:`resolve_parameters` for every tensor of one recipe, each distinct answer computed
    once: a value depends on the tensor's name only through filters and on its depth only
    through gradients, so in a recipe with neither every tensor of a model gets the same
    values, and a plan of thousands of tensors resolves a handful. A re-merge with new
    parameters (:class:`alloykit.Merger`) re-resolves them all, every time."""

    def __init__(self, recipe: Recipe, method: Method) -> None:
        self.recipe = recipe
        self.method = method
        settings = [
            entry for level in _levels(recipe) for s in level.values() for entry in s.entries
        ]
        self.by_name = any(e.filter not in (None, "*") for e in settings)
        self.by_depth = any(isinstance(e.value, tuple) for e in settings)
        self._known: dict[tuple[object, ...], dict[str, Scalar]] = {}
        self._entries: dict[tuple[object, ...], tuple[PerModel, dict[str, Scalar]]] = {}
        self._per_model = [p.name for p in method.params if p.scope is Scope.PER_MODEL]
        self._global = [p.name for p in method.params if p.scope is Scope.GLOBAL]

    def entry_values(
        self,
        *,
        tensor_name: str,
        t: float,
        slice_index: int | None,
        models: Sequence[tuple[ModelInput, str]],
    ) -> tuple[PerModel, dict[str, Scalar]]:
        """One output tensor's parameters: the per-model values (per parameter, one value per
        model of ``models``, each a recipe entry with its tensor's name) and the globals."""
        key = (
            tuple((m.model, m.key_path, n if self.by_name else None) for m, n in models),
            slice_index,
            tensor_name if self.by_name else None,
            t if self.by_depth else None,
        )
        found = self._entries.get(key)
        if found is None:
            every = [
                self.values(
                    tensor_name=tensor_name,
                    t=t,
                    slice_index=slice_index,
                    model_input=model_input,
                    input_tensor_name=input_name,
                )
                for model_input, input_name in models
            ]
            per_model = {n: tuple(v[n] for v in every) for n in self._per_model if every}
            shared = every[-1] if every else {}
            found = self._entries[key] = (
                per_model,
                {n: shared[n] for n in self._global if n in shared},
            )
        return dict(found[0]), dict(found[1])

    def values(
        self,
        *,
        tensor_name: str,
        t: float,
        slice_index: int | None,
        model_input: ModelInput,
        input_tensor_name: str,
    ) -> dict[str, Scalar]:
        """:func:`resolve_parameters` of this recipe (the dict is shared: do not change it)."""
        key = (
            model_input.model,
            model_input.key_path,
            slice_index,
            (tensor_name, input_tensor_name) if self.by_name else None,
            t if self.by_depth else None,
        )
        found = self._known.get(key)
        if found is None:
            found = self._known[key] = resolve_parameters(
                self.recipe,
                self.method,
                tensor_name=tensor_name,
                t=t,
                slice_index=slice_index,
                model_input=model_input,
                input_tensor_name=input_tensor_name,
            )
        return found


def _levels(recipe: Recipe) -> list[Parameters]:
    """Every parameter level of ``recipe``: top, models', slices' and their sources'."""
    levels = [recipe.parameters, *(m.parameters for m in recipe.models or ())]
    for piece in recipe.slices or ():
        levels.extend([piece.parameters, *(s.parameters for s in piece.sources)])
    return levels
