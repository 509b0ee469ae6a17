"""Command definitions. Each command parses options, calls the API, and renders."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from alloykit.cli.guard import guarded, is_tty
from alloykit.cli.render import (
    human_bytes,
    methods_markdown,
    render_method,
    render_methods,
    render_plan,
)

app = typer.Typer(
    name="alloykit",
    help="Build new models out of pretrained checkpoints.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(highlight=False, soft_wrap=True)

Debug = Annotated[bool, typer.Option("--debug", help="Show full tracebacks.")]


@app.command()
def merge(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML (alloykit or mergekit format).")],
    out: Annotated[Path | None, typer.Argument(help="Output model directory.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan and exit.")] = False,
    device: Annotated[str, typer.Option(help="cpu or cuda[:N].")] = "cpu",
    threads: Annotated[int, typer.Option(min=1, help="Tensors processed at once.")] = 2,
    dtype: Annotated[str | None, typer.Option(help="Compute dtype (default float32).")] = None,
    out_dtype: Annotated[
        str | None, typer.Option(help="Output dtype (default: recipe, else inputs').")
    ] = None,
    out_shard_size: Annotated[str, typer.Option(help="Max bytes per output shard.")] = "5GB",
    memory_budget: Annotated[str, typer.Option(help="Bytes of tensors in flight.")] = "2GB",
    seed: Annotated[
        int | None, typer.Option(help="Seed for random methods (default: recipe's, else 0).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing OUT.")] = False,
    allow_pickle: Annotated[
        bool, typer.Option("--allow-pickle", help="Load .bin checkpoints (weights_only).")
    ] = False,
    drop_unmapped: Annotated[
        bool,
        typer.Option(
            "--drop-unmapped",
            help="Drop input tensors with no place in the output instead of failing.",
        ),
    ] = False,
    vocab_mismatch: Annotated[str | None, typer.Option(help="error | common_rows")] = None,
    debug: Debug = False,
) -> None:
    """Merge checkpoints as a recipe says, into OUT (written atomically)."""
    from alloykit.api import MergeOptions, plan, write_plan
    from alloykit.checkpoint.sink import check_output_dir
    from alloykit.engine import resolve_device
    from alloykit.errors import AlloyError

    options = MergeOptions(
        device=device,
        threads=threads,
        dtype=dtype,
        out_dtype=out_dtype,
        out_shard_size=out_shard_size,
        seed=seed,
        force=force,
        allow_pickle=allow_pickle,
        drop_unmapped=drop_unmapped,
        vocab_mismatch=vocab_mismatch,
        memory_budget=memory_budget,
    )
    with guarded(debug):
        if vocab_mismatch not in (None, "error", "common_rows"):
            raise AlloyError(
                f"--vocab-mismatch: unknown value {vocab_mismatch!r}", "use error or common_rows"
            )
        resolve_device(device)
        if out is None and not dry_run:
            raise AlloyError(
                "missing OUT directory", "alloykit merge RECIPE.yml OUT/ (or --dry-run)"
            )
        if out is not None and not dry_run:
            check_output_dir(out.absolute(), force)
        the_plan = plan(recipe, options)
        if dry_run:
            engine = options.engine_options()
            peak = the_plan.estimated_peak_bytes(engine.threads, engine.budget_bytes)
            render_plan(the_plan, console, peak_bytes=peak)
            return
        for warning in the_plan.warnings:
            console.print(f"[yellow]warning:[/] {warning}", markup=True)
        assert out is not None
        written = _with_progress(the_plan, options, lambda: write_plan(the_plan, out, options))
        size = human_bytes(the_plan.output_bytes)
        console.print(f"wrote {written} ({len(the_plan.entries)} tensors, {size})")


def _with_progress(the_plan, options, work):
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        TextColumn("merging"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("tensors"),
        DownloadColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        disable=not is_tty(),
        console=Console(stderr=True),
        transient=False,
    )
    tensors = progress.add_task("tensors", total=len(the_plan.entries))

    def advance(entry) -> None:
        progress.update(tensors, advance=1)

    options.on_done = advance
    with progress:
        return work()


@app.command()
def methods(
    name: Annotated[str | None, typer.Argument(help="Show one method in detail.")] = None,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print the docs page.")] = False,
    debug: Debug = False,
) -> None:
    """List merge methods with their parameters, or describe one."""
    from alloykit.errors import RecipeError
    from alloykit.methods import all_methods, get_method, method_names

    with guarded(debug):
        if markdown:
            print(methods_markdown(all_methods()), end="")
            return
        if name is None:
            render_methods(all_methods(), console)
            return
        try:
            method = get_method(name)
        except KeyError:
            import difflib

            close = difflib.get_close_matches(name, method_names(), n=1)
            hint = f"did you mean {close[0]!r}?" if close else "run `alloykit methods` for the list"
            raise RecipeError(f"unknown method {name!r}", hint) from None
        render_method(method, console)


@app.command()
def demo(
    workdir: Annotated[Path, typer.Option(help="Where to build the example models.")] = Path(
        "alloykit-demo"
    ),
    debug: Debug = False,
) -> None:
    """Build small example models, merge them with TIES, and check the result loads and runs."""
    from alloykit.cli.demo import run_demo

    with guarded(debug):
        run_demo(workdir, console)


def main() -> None:
    app()
