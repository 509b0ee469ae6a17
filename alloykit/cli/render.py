"""Text rendering of plans and method contracts."""

from __future__ import annotations

import re

from rich.console import Console
from rich.table import Table

from alloykit.engine import EngineOptions
from alloykit.engine.budget import describe_budget
from alloykit.engine.memory import budget_warnings, estimated_peak_bytes, whole_tensor_summary
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
    whole_tensor: tuple[PlanEntry | None, int] = (None, 0),
    budget: str | None = None,
    verbose: bool = False,
) -> None:
    """Print the plan: the summary first, then the output tensors grouped by method and
    parameters (one line per tensor with ``verbose``), drops and warnings. ``largest`` is the
    entry with the largest working-memory bound and that bound, ``whole_tensor`` the same among
    the entries merged whole (:meth:`~alloykit.plan.Plan.largest_working`); ``budget`` states
    the memory budget (:func:`~alloykit.engine.budget.describe_budget`)."""
    recipe = plan.recipe
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
        f"[bold]summary[/] {len(plan.entries)} output tensors, {len(plan.dropped)} dropped, "
        f"{len(plan.warnings)} warnings; output size {human_bytes(plan.output_bytes)}; "
        f"{read}{biggest}estimated peak memory {human_bytes(peak_bytes)}; "
        f"config: {plan.reference}; tokenizer: {plan.tokenizer_source}"
    )
    whole, whole_bound = whole_tensor
    if whole is not None:
        console.print(
            f"[bold]whole-tensor[/] largest {whole_tensor_summary(whole)} ({whole.name}, "
            f"{whole.method}): ~{human_bytes(whole_bound)} per worker while it is merged",
            highlight=False,
        )
    if budget is not None:
        console.print(f"[bold]memory budget[/] {budget}", highlight=False)
    console.print(
        f"[bold]method[/] {plan.method.name}   [bold]seed[/] {plan.seed}   "
        f"[bold]compute dtype[/] {plan.compute_dtype}"
    )
    if recipe.modules:
        merges = (f"{spec.name} ({spec.recipe.merge_method})" for spec in recipe.modules)
        console.print(f"[bold]modules[/] {', '.join(merges)}")
    if recipe.base_model:
        console.print(f"[bold]base[/] {recipe.base_model}")
    for ref, source in plan.sources.items():
        console.print(f"[bold]input[/] {ref} → {source.root} ({len(source.tensors)} tensors)")
    for ref, statistics_file in plan.statistics.items():
        kinds = ", ".join(sorted(statistics_file.kinds()))
        console.print(f"[bold]statistics[/] {ref} → {statistics_file.path} ({kinds})")
    console.print()
    if verbose:
        console.print("[bold]output tensors[/] (name  shape  dtype  ←  inputs  params)")
        for each in plan.entries:
            console.print(
                f"  {each.name}  {list(each.shape)}  {each.dtype}  ← {_inputs(each)}  "
                f"{_params(each)}{_statistics(plan, each)}",
                highlight=False,
                markup=False,
            )
    else:
        _render_groups(plan, console)
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


def render_plan_and_memory(
    plan: Plan, console: Console, options: EngineOptions, *, verbose: bool = False
) -> None:
    """:func:`render_plan` with the memory the merge needs under ``options``: its estimated
    peak, the largest working sets, and a warning (added to the plan's) for a tensor merged
    whole whose working set alone exceeds the budget."""
    add_budget_warnings(plan, options)
    chunk = options.chunk_size()
    render_plan(
        plan,
        console,
        peak_bytes=estimated_peak_bytes(plan, options),
        largest=plan.largest_working(chunk),
        whole_tensor=plan.largest_working(chunk, whole_tensor=True),
        budget=describe_budget(options.budget_bytes, options.budget_available),
        verbose=verbose,
    )


def add_budget_warnings(plan: Plan, options: EngineOptions) -> None:
    """Add to ``plan``'s warnings those of :func:`~alloykit.engine.memory.budget_warnings`,
    once."""
    plan.warnings.extend(w for w in budget_warnings(plan, options) if w not in plan.warnings)


_NUMBER = re.compile(r"(?<=\.)\d+(?=\.)")


def _render_groups(plan: Plan, console: Console) -> None:
    """Output tensors that share a method and parameters, as one line per group (their count
    and size) and their names with layer numbers folded into ranges."""
    groups: dict[tuple[str, str, str], list[PlanEntry]] = {}
    for entry in plan.entries:
        groups.setdefault((entry.method, _params(entry), str(entry.dtype)), []).append(entry)
    console.print(
        f"[bold]output tensors[/] in {len(groups)} groups by method and parameters "
        "(--verbose: one line per tensor)"
    )
    for (method, params, dtype), entries in groups.items():
        size = human_bytes(sum(e.nbytes for e in entries))
        console.print(
            f"  {len(entries)} tensors, {size} {dtype}: {method} {params}".rstrip(),
            highlight=False,
            markup=False,
        )
        for pattern in _name_patterns([e.name for e in entries]):
            console.print(f"    {pattern}", highlight=False, markup=False)


def _name_patterns(names: list[str]) -> list[str]:
    """``names`` with their dotted numbers (layers, experts) folded: ``layers.[0-21].mlp``."""
    numbers: dict[str, list[list[int]]] = {}
    for name in names:
        found = [int(n) for n in _NUMBER.findall(name)]
        numbers.setdefault(_NUMBER.sub("#", name), []).append(found)
    patterns = []
    for pattern, values in numbers.items():
        for position in range(len(values[0])):
            seen = sorted({v[position] for v in values})
            text = str(seen[0]) if len(seen) == 1 else _ranges(seen)
            pattern = pattern.replace("#", text, 1)
        patterns.append(pattern)
    return patterns


def _ranges(values: list[int]) -> str:
    """``[0-3,5]`` for 0, 1, 2, 3, 5."""
    runs: list[list[int]] = []
    for value in values:
        if runs and value == runs[-1][-1] + 1:
            runs[-1].append(value)
        else:
            runs.append([value])
    return "[" + ",".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs) + "]"


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
