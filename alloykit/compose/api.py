"""Python API of composition: plan an MoE, build it into a directory, write upcycling recipes."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from alloykit.api import MergeOptions, write_plan
from alloykit.checkpoint.sink import check_output_dir
from alloykit.compose.planner import MoEPlan, make_moe_plan
from alloykit.compose.recipe import MoERecipe, load_moe_recipe
from alloykit.engine.tensors import resolve_device

MoERecipeLike = MoERecipe | str | Path | dict[str, Any]


def moe_plan(
    recipe: MoERecipeLike, options: MergeOptions | None = None, **overrides: Any
) -> MoEPlan:
    """Validate an MoE recipe, open its models by headers and compute the routers: the plan
    ``alloykit moe --dry-run`` prints. Options are those of :class:`MergeOptions`."""
    opts = dataclasses.replace(options or MergeOptions(), **overrides)
    the_recipe = (
        recipe if isinstance(recipe, MoERecipe) else load_moe_recipe(recipe, seed=opts.seed)
    )
    return make_moe_plan(the_recipe, opts.plan_options(), resolve_device(opts.device))


def build_moe(
    recipe: MoERecipeLike,
    out_dir: str | Path,
    options: MergeOptions | None = None,
    **overrides: Any,
) -> Path:
    """Build the MoE a recipe describes into a Hugging Face model directory, written
    atomically (``OUT.partial`` → ``OUT``); return its path."""
    opts = dataclasses.replace(options or MergeOptions(), **overrides)
    out = Path(out_dir)
    check_output_dir(out.absolute(), opts.force)
    return write_plan(moe_plan(recipe, opts), out, opts)


def upcycle_recipe(
    model: str,
    num_experts: int,
    *,
    experts_per_token: int = 2,
    architecture: str | None = None,
    reinit_ratio: float = 0.0,
    num_shared_experts: int | None = None,
    gate_mode: str = "random",
    dtype: str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """The recipe that upcycles ``model`` into ``num_experts`` experts (see docs/moe.md)."""
    recipe: dict[str, Any] = {
        "base_model": model,
        "num_experts": num_experts,
        "experts_per_token": experts_per_token,
        "gate_mode": gate_mode,
        "reinit_ratio": reinit_ratio,
        "seed": seed,
        "architecture": architecture,
        "num_shared_experts": num_shared_experts,
        "dtype": dtype,
    }
    return {k: v for k, v in recipe.items() if v is not None}
