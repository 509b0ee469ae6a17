"""A plan with a recipe's new parameter values, without planning again.

A recipe search (and :class:`alloykit.Merger`) merges many recipes that differ only in their
parameter values: each entry's values are resolved again from where the planner found them
(its :class:`~alloykit.plan.ParameterSite`), each distinct answer once.
"""

from __future__ import annotations

import copy
from dataclasses import replace

from alloykit.methods import get_method
from alloykit.plan import Plan, PlanOptions, tensor_seed
from alloykit.planner.builder import BASE_KEY
from alloykit.recipe.model import ModelInput, Recipe
from alloykit.recipe.resolve import ParameterResolver


def reparameterised(plan: Plan, recipe: Recipe, options: PlanOptions) -> Plan | None:
    """``plan`` with the parameter values (and seed) of ``recipe``, when ``recipe`` differs
    from the recipe ``plan`` was made from in those alone: the same tensors from the same
    inputs, each with its parameters resolved again from its
    :class:`~alloykit.plan.ParameterSite`. ``None`` when the recipes differ in anything else
    (models, method, dtypes, layer ranges, ...): that recipe needs a plan of its own."""
    if recipe.modules or _structure(recipe) != _structure(plan.recipe):
        return None  # a modules: recipe is planned again (its sites are per module)
    method = get_method(recipe.merge_method)
    resolver = ParameterResolver(recipe, method)
    inputs = _model_inputs(recipe)
    seed = options.seed if options.seed is not None else (recipe.seed or 0)
    entries = []
    for entry in plan.entries:
        site = plan.parameter_sites.get(entry.name)
        if site is None:  # copied, not merged
            entries.append(entry)
            continue
        models = [(inputs[key_path], name) for key_path, name in site.models]
        per_model, global_values = resolver.entry_values(
            tensor_name=site.tensor, t=site.t, slice_index=site.slice_index, models=models
        )
        changed = copy.copy(entry)  # dataclasses.replace takes ten times as long
        changed.per_model, changed.globals = per_model, global_values
        changed.seed = tensor_seed(seed, entry.name) if method.random else 0
        entries.append(changed)
    return replace(plan, recipe=recipe, entries=entries, seed=seed)


def _structure(recipe: Recipe) -> Recipe:
    """``recipe`` without its parameter values and seed (and the text they came from)."""
    bare = tuple(replace(m, parameters={}) for m in recipe.models or ())
    pieces = tuple(
        replace(p, parameters={}, sources=tuple(replace(s, parameters={}) for s in p.sources))
        for p in recipe.slices or ()
    )
    return replace(
        recipe,
        parameters={},
        models=bare if recipe.models is not None else None,
        slices=pieces if recipe.slices is not None else None,
        seed=None,
        raw={},
        warnings=(),
    )


def _model_inputs(recipe: Recipe) -> dict[str, ModelInput]:
    """Every model entry of ``recipe`` by key path, and a base merged as one more model."""
    found = {m.key_path: m for m in recipe.models or ()}
    for piece in recipe.slices or ():
        found.update((s.key_path, s) for s in piece.sources)
    if recipe.base_model is not None:
        found[BASE_KEY] = ModelInput(model=recipe.base_model, key_path=BASE_KEY)
    return found
