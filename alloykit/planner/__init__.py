"""Recipe + opened sources → Plan: which inputs, method and parameters make each output tensor.

Layer structure comes from tensor names and config.json (see :mod:`alloykit.arch`); parameters
are resolved per tensor with mergekit's precedence, filters and gradients
(see :mod:`alloykit.recipe.resolve`).

One module per job: :mod:`~alloykit.planner.builder` walks the recipe and decides each output
tensor; :mod:`~alloykit.planner.vocabulary` plans the output vocabulary;
:mod:`~alloykit.planner.statistics` maps the statistics inputs a method declares;
:mod:`~alloykit.planner.drops` gives each unused input tensor its reason;
:mod:`~alloykit.planner.reparameterise` gives a plan a recipe's new parameter values without
planning again.
"""

from __future__ import annotations

from alloykit.checkpoint.source import ModelSource, open_source
from alloykit.plan import Plan, PlanOptions
from alloykit.planner.builder import Planner
from alloykit.planner.reparameterise import reparameterised
from alloykit.recipe.model import Recipe

__all__ = ["make_plan", "open_sources", "reparameterised"]


def open_sources(recipe: Recipe, allow_pickle: bool) -> dict[str, ModelSource]:
    search = (recipe.source_file.parent,) if recipe.source_file else ()
    return {
        ref: open_source(ref, search_dirs=search, allow_pickle=allow_pickle)
        for ref in recipe.model_references()
    }


def make_plan(
    recipe: Recipe,
    options: PlanOptions | None = None,
    *,
    sources: dict[str, ModelSource] | None = None,
) -> Plan:
    """Open every model by headers and decide how each output tensor is made.

    ``sources``, the recipe's models already opened (by reference), are used instead of
    opening them again (:class:`alloykit.Merger` plans new parameters over resident inputs).
    """
    options = options or PlanOptions()
    if sources is None:
        sources = open_sources(recipe, options.allow_pickle)
    return Planner(recipe, options, sources).build()
