"""``alloykit merge`` of a multi-document recipe (mergekit-multi): one line per merge, or each
merge's plan with ``--dry-run``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from alloykit.cli.render import add_budget_warnings, render_plan_and_memory

if TYPE_CHECKING:
    from alloykit.api import MergeOptions
    from alloykit.plan import Plan
    from alloykit.recipe.multi import MergeStep


def merge_documents(
    recipe: Path,
    out: Path | None,
    options: MergeOptions,
    intermediate_dir: Path | None,
    lazy: bool,
    dry_run: bool,
    quiet: bool,
    console: Console,
) -> None:
    """Run (or with ``dry_run`` print) each merge of a multi-document recipe in order."""
    from alloykit.api import intermediate_dir_for, merge_steps, plan
    from alloykit.recipe import load_recipe
    from alloykit.recipe.multi import load_steps

    if dry_run:
        steps = load_steps(recipe, Path("."))
        has_final = any(step.name is None for step in steps)
        directory = intermediate_dir or intermediate_dir_for(out, recipe, has_final)
        steps = load_steps(recipe, directory.absolute())
        engine = options.engine_options()
        for number, step in enumerate(steps, 1):
            target = out if step.name is None else directory / step.name
            console.print(f"[bold]merge {number}/{len(steps)}[/] {step.label} → {target}")
            waiting = [n for n in step.needs if not (directory / n / "config.json").is_file()]
            if waiting:
                console.print(f"  planned once {', '.join(waiting)} is built\n")
                continue
            the_plan = plan(load_recipe(step.recipe, seed=options.seed, source_file=recipe))
            render_plan_and_memory(the_plan, console, engine)
            console.print()
        return

    def announce(step: MergeStep, target: Path, the_plan: Plan | None) -> None:
        if quiet:
            return
        if the_plan is None:
            console.print(f"kept {target} ({step.label}, built by an earlier run)")
            return
        add_budget_warnings(the_plan, options.engine_options())
        for warning in the_plan.warnings:
            console.print(f"[yellow]warning:[/] {step.label}: {warning}", markup=True)
        console.print(f"merging {step.label} → {target}")

    results = merge_steps(
        recipe, out, options, intermediate_dir=intermediate_dir, lazy=lazy, on_step=announce
    )
    if not quiet:
        built = sum(result.built for result in results)
        console.print(f"wrote {built} of {len(results)} merges; last: {results[-1].out}")
