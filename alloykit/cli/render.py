"""Text rendering of plans and method contracts."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from alloykit.methods import Method, get_method
from alloykit.plan import Plan, PlanEntry
from alloykit.units import human_bytes


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


def _statistics(plan: Plan, entry: PlanEntry) -> str:
    """The entry's statistics inputs: ``  + gram [n × shape] BYTES`` per statistic (or
    ``none``, where the method falls back)."""
    parts = []
    for name, refs in entry.statistics.items():
        present = [ref for ref in refs if ref is not None]
        if not present:
            parts.append(f"{name} none")
            continue
        stored = plan.statistics[present[0].model].entries[present[0].name]
        size = sum(plan.statistics[r.model].entries[r.name].nbytes for r in present)
        parts.append(f"{name} [{len(present)} × {list(stored.shape)}] {human_bytes(size)}")
    return ("  + " + ", ".join(parts)) if parts else ""


def render_plan(
    plan: Plan,
    console: Console,
    *,
    peak_bytes: int,
    largest: tuple[PlanEntry | None, int] = (None, 0),
) -> None:
    """Print the plan; ``largest`` is the entry with the largest working-memory bound and
    that bound (:meth:`~alloykit.plan.Plan.largest_working`)."""
    recipe = plan.recipe
    console.print(
        f"[bold]method[/] {plan.method.name}   [bold]seed[/] {plan.seed}   "
        f"[bold]compute dtype[/] {plan.compute_dtype}"
    )
    if recipe.base_model:
        console.print(f"[bold]base[/] {recipe.base_model}")
    for ref, source in plan.sources.items():
        console.print(f"[bold]input[/] {ref} → {source.root} ({len(source.tensors)} tensors)")
    for ref, statistics in plan.statistics.items():
        kinds = ", ".join(sorted(statistics.kinds()))
        console.print(f"[bold]statistics[/] {ref} → {statistics.path} ({kinds})")
    console.print()
    console.print("[bold]output tensors[/] (name  shape  dtype  ←  inputs  params)")
    for entry in plan.entries:
        console.print(
            f"  {entry.name}  {list(entry.shape)}  {entry.dtype}  ← {_inputs(entry)}  "
            f"{_params(entry)}{_statistics(plan, entry)}",
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
    statistics = sum(plan.statistics_bytes(e) for e in plan.entries)
    read = f"statistics read {human_bytes(statistics)}; " if plan.statistics else ""
    entry, bound = largest
    biggest = (
        f"largest working set {human_bytes(bound)} ({entry.name}, "
        f"{get_method(entry.method).form.value}); "
        if entry is not None
        else ""
    )
    console.print(
        f"[bold]summary[/] {len(plan.entries)} output tensors, {len(plan.dropped)} dropped; "
        f"output size {human_bytes(plan.output_bytes)}; {read}{biggest}"
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
        + f"; form: {method.form.value}"
    )
    for statistic in method.statistics:
        fallback = f" (without it: {statistic.fallback})" if statistic.fallback else ""
        console.print(
            f"statistic {statistic.name} ({statistic.shape.value}): {statistic.doc}{fallback}"
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


def methods_markdown(methods: list[Method]) -> str:
    """The docs page of the method catalog, generated from the registry contracts."""
    lines = [
        "# Merge methods",
        "",
        "Generated by `alloykit methods --markdown` from the method registry; do not edit.",
        "",
        "| method | base model | models | random | parameters | reference |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for m in methods:
        count = f"{m.min_models}+" if m.max_models is None else f"{m.min_models}–{m.max_models}"
        params = ", ".join(f"`{p.name}`" for p in m.params)
        random = "yes" if m.random else "no"
        lines.append(
            f"| `{m.name}` | {m.base.value} | {count} | {random} | {params} | {m.reference} |"
        )
    for m in methods:
        lines += ["", f"## {m.name}", "", m.summary, "", f"Reference: {m.reference}", ""]
        if m.notes:
            lines += [f"Note: {m.notes}", ""]
        lines += [
            "| parameter | scope | default | allowed | description |",
            "| --- | --- | --- | --- | --- |",
        ]
        for p in m.params:
            default = "required" if p.required else f"`{p.default!r}`"
            lines.append(f"| `{p.name}` | {p.scope.value} | {default} | {p.allowed()} | {p.doc} |")
    return "\n".join(lines) + "\n"
