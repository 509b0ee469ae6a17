"""Composition: dense experts → Mixture-of-Experts, and upcycling one dense model into an MoE.

See docs/moe.md. ``build_moe(recipe, OUT)`` writes the model; ``moe_plan(recipe)`` returns
what ``alloykit moe --dry-run`` prints.
"""

from alloykit.compose.api import build_moe, moe_plan, upcycle_recipe
from alloykit.compose.formats import FORMATS, MoEFormat
from alloykit.compose.planner import MoEPlan
from alloykit.compose.recipe import MoERecipe, load_moe_recipe

__all__ = [
    "FORMATS",
    "MoEFormat",
    "MoEPlan",
    "MoERecipe",
    "build_moe",
    "load_moe_recipe",
    "moe_plan",
    "upcycle_recipe",
]
