"""Text rendering of plans and method contracts."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from alloykit.methods import Method
from alloykit.plan import Plan, PlanEntry


def human_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(count) < 1000 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.2f} {unit}"
        count /= 1000
    raise AssertionError


def _inputs(entry: PlanEntry) -> str:
    parts = []
    for ref in entry.inputs:
        parts.append(ref.model if ref.name == entry.name else f"{ref.model}:{ref.name}")
    text = ", ".join(parts)
    if entry.base is not None:
        base = (
            entry.base.model
            if entry.base.name == entry.name
            else f"{entry.base.model}:{entry.base.name}"
        )
        text += f" | base {base}"
    return text


def _params(entry: PlanEntry) -> str:
    values = [f"{k}={v}" for k, v in entry.globals.items()]
    values += [
        f"{k}=[{', '.join(f'{x:g}' if isinstance(x, float) else str(x) for x in v)}]"
        for k, v in entry.per_model.items()
    ]
    if entry.common_rows is not None:
        values.append(f"common_rows={entry.common_rows}")
    return " ".join(values)


def render_plan(plan: Plan, console: Console, *, peak_bytes: int) -> None:
    recipe = plan.recipe
    console.print(
        f"[bold]method[/] {plan.method.name}   [bold]seed[/] {plan.seed}   "
        f"[bold]compute dtype[/] {str(plan.compute_dtype).removeprefix('torch.')}"
    )
    if recipe.base_model:
        console.print(f"[bold]base[/] {recipe.base_model}")
    for ref, source in plan.sources.items():
        console.print(f"[bold]input[/] {ref} → {source.root} ({len(source.tensors)} tensors)")
    console.print()
    console.print("[bold]output tensors[/] (name  shape  dtype  ←  inputs  params)")
    for entry in plan.entries:
        dtype = str(entry.dtype).removeprefix("torch.")
        console.print(
            f"  {entry.name}  {list(entry.shape)}  {dtype}  ← {_inputs(entry)}  {_params(entry)}",
            highlight=False,
            markup=False,
        )
    if plan.dropped:
        console.print()
        console.print(f"[bold]dropped input tensors[/] ({len(plan.dropped)})")
        for item in plan.dropped:
            console.print(
                f"  {item.model}:{item.name} — {item.reason}", highlight=False, markup=False
            )
    if plan.warnings:
        console.print()
        console.print(f"[bold yellow]warnings[/] ({len(plan.warnings)})")
        for warning in plan.warnings:
            console.print(f"  {warning}", highlight=False, markup=False)
    console.print()
    console.print(
        f"[bold]summary[/] {len(plan.entries)} output tensors, {len(plan.dropped)} dropped; "
        f"output size {human_bytes(plan.output_bytes)}; "
        f"estimated peak working memory {human_bytes(peak_bytes)}; "
        f"config: {plan.reference}; tokenizer: {plan.tokenizer_source}"
    )


def render_methods(methods: list[Method], console: Console) -> None:
    table = Table(title="merge methods", show_lines=False)
    table.add_column("method", style="bold")
    table.add_column("base model")
    table.add_column("models")
    table.add_column("parameters")
    table.add_column("summary")
    for method in methods:
        count = (
            f"{method.min_models}+"
            if method.max_models is None
            else (
                f"{method.min_models}"
                if method.min_models == method.max_models
                else f"{method.min_models}-{method.max_models}"
            )
        )
        params = ", ".join(p.name for p in method.params)
        table.add_row(method.name, method.base.value, count, params, method.summary)
    console.print(table)


def render_method(method: Method, console: Console) -> None:
    console.print(f"[bold]{method.name}[/] — {method.summary}")
    console.print(f"reference: {method.reference}")
    count = "any number" if method.max_models is None else f"at most {method.max_models}"
    console.print(
        f"base model: {method.base.value}; models: at least {method.min_models}, {count}"
        + ("; random (seeded per tensor)" if method.random else "")
    )
    if method.notes:
        console.print(f"notes: {method.notes}")
    table = Table(show_lines=False)
    for column in ("parameter", "scope", "default", "allowed", "description"):
        table.add_column(column)
    for p in method.params:
        table.add_row(
            p.name,
            p.scope.value,
            repr(p.default) if not p.required else "required",
            p.allowed(),
            p.doc,
        )
    console.print(table)
