"""``alloykit lora``: extract, merge and apply LoRA adapters."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
import yaml
from rich.console import Console
from rich.markup import escape

from alloykit.cli.guard import guarded
from alloykit.cli.options import AllowPickle, Debug, Force

if TYPE_CHECKING:
    from alloykit.lora.report import TensorReport

lora_app = typer.Typer(
    name="lora",
    help="Extract LoRA adapters from fine-tunes, merge adapters, apply them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(highlight=False, soft_wrap=True)

Rank = Annotated[int | None, typer.Option(help="Rank of every module.")]
Energy = Annotated[
    float | None,
    typer.Option(help="Per module, the smallest rank keeping this share of ‖ΔW‖² (0-1]."),
]
MaxRank = Annotated[int | None, typer.Option(help="Cap on --energy ranks.")]
Svd = Annotated[str, typer.Option(help="exact (torch.linalg.svd) | randomized (svd_lowrank).")]
Dtype = Annotated[str, typer.Option(help="dtype of the A and B factors.")]
Device = Annotated[str, typer.Option(help="cpu or cuda[:N], for the SVDs.")]


@lora_app.command()
def extract(
    out: Annotated[Path, typer.Argument(help="Output adapter directory.")],
    model: Annotated[str, typer.Option("--model", help="The fine-tuned model.")],
    base: Annotated[str, typer.Option("--base", help="The model it was fine-tuned from.")],
    rank: Rank = None,
    energy: Energy = None,
    max_rank: MaxRank = None,
    include: Annotated[
        list[str] | None, typer.Option(help="Regex over module names to include (repeatable).")
    ] = None,
    exclude: Annotated[
        list[str] | None, typer.Option(help="Regex over module names to exclude (repeatable).")
    ] = None,
    embeddings: Annotated[
        str, typer.Option(help="full (modules_to_save, exact) | low-rank.")
    ] = "full",
    save_unfactorable: Annotated[
        bool,
        typer.Option(
            "--save-unfactorable",
            help="Save modules with changed 1-D tensors (norms, biases) in full.",
        ),
    ] = False,
    svd: Svd = "exact",
    dtype: Dtype = "float32",
    device: Device = "cpu",
    force: Force = False,
    allow_pickle: AllowPickle = False,
    debug: Debug = False,
) -> None:
    """Extract the adapter that turns BASE into MODEL (truncated SVD of each weight delta)."""
    from alloykit.lora.extract import ExtractOptions, extract_adapter

    options = ExtractOptions(
        rank=rank,
        energy=energy,
        max_rank=max_rank,
        svd=svd,
        include=include or (),
        exclude=exclude or (),
        embeddings=embeddings,
        save_unfactorable=save_unfactorable,
        dtype=dtype,
        device=device,
        force=force,
        allow_pickle=allow_pickle,
    )
    with guarded(debug):
        result = extract_adapter(model, base, out, options)
        render_reports(result.rows)
        for warning in filter(None, result.warnings):
            console.print(f"[yellow]warning:[/] {escape(warning.removeprefix('Note: '))}")
        console.print(f"{result.unchanged} tensors unchanged")
        console.print(f"wrote {result.out_dir}")


@lora_app.command()
def merge(
    paths: Annotated[list[Path], typer.Argument(help="Adapters to merge, then OUT.")],
    method: Annotated[str, typer.Option(help="linear, task_arithmetic, ties, dare_*, ...")] = (
        "linear"
    ),
    weights: Annotated[
        str | None, typer.Option(help="One weight per adapter: 0.7,-0.3 (negative allowed).")
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option(help="Method parameter NAME=VALUE or NAME=V1,V2 (repeatable)."),
    ] = None,
    rank: Annotated[
        int | None, typer.Option(help="Re-factorise the merged delta to this rank.")
    ] = None,
    energy: Energy = None,
    max_rank: MaxRank = None,
    svd: Svd = "exact",
    base: Annotated[
        str | None, typer.Option(help="Base model; needed for modules saved in full.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for random methods (dare, della).")] = 0,
    dtype: Dtype = "float32",
    device: Device = "cpu",
    force: Force = False,
    allow_pickle: AllowPickle = False,
    debug: Debug = False,
) -> None:
    """Merge ADAPTERS into OUT in delta-W space (exact concatenation for linear methods)."""
    from alloykit.errors import AlloyError
    from alloykit.lora.merge import AdapterMergeOptions, merge_adapters

    with guarded(debug):
        if len(paths) < 2:
            raise AlloyError("give at least one adapter and OUT", "alloykit lora merge A B OUT/")
        parameters = parse_parameters(param or ())
        if weights is not None:
            parameters["weight"] = parse_values(weights, "--weights")
        options = AdapterMergeOptions(
            method=method,
            parameters=parameters,
            rank=rank,
            energy=energy,
            max_rank=max_rank,
            svd=svd,
            base=base,
            seed=seed,
            dtype=dtype,
            device=device,
            force=force,
            allow_pickle=allow_pickle,
        )
        result = merge_adapters(paths[:-1], paths[-1], options)
        render_reports(result.rows)
        how = "concatenated (exact)" if result.concatenated else "re-factorised by SVD"
        console.print(f"wrote {result.out_dir} ({how})")


@lora_app.command()
def apply(
    out: Annotated[Path, typer.Argument(help="Output model directory.")],
    base: Annotated[str, typer.Option("--base", help="The model the adapter was made for.")],
    adapter: Annotated[str, typer.Option("--adapter", help="PEFT LoRA adapter directory.")],
    out_dtype: Annotated[str | None, typer.Option(help="Output dtype (default: base's).")] = None,
    threads: Annotated[int, typer.Option(min=1, help="Tensors processed at once.")] = 2,
    device: Annotated[str, typer.Option(help="cpu or cuda[:N].")] = "cpu",
    force: Force = False,
    allow_pickle: AllowPickle = False,
    debug: Debug = False,
) -> None:
    """Bake ADAPTER into BASE: write the full model W + scale·B·A to OUT (atomically)."""
    from alloykit.lora.apply import apply_adapter

    with guarded(debug):
        written = apply_adapter(
            base,
            adapter,
            out,
            out_dtype=out_dtype,
            threads=threads,
            device=device,
            force=force,
            allow_pickle=allow_pickle,
        )
        console.print(f"wrote {written}")


def parse_values(text: str, where: str) -> list[object]:
    """``"0.7,-0.3"`` → [0.7, -0.3]; each item read as YAML (numbers, true/false, words)."""
    from alloykit.errors import AlloyError

    values = []
    for item in text.split(","):
        try:
            values.append(yaml.safe_load(item))
        except yaml.YAMLError:
            values.append(item)
        if values[-1] is None:
            raise AlloyError(f"{where}: empty value in {text!r}", "e.g. 0.7,-0.3")
    return values


def parse_parameters(items: Sequence[str]) -> dict[str, object]:
    from alloykit.errors import AlloyError

    parameters: dict[str, object] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name.strip():
            raise AlloyError(f"--param: expected NAME=VALUE, got {item!r}", "e.g. density=0.5")
        values = parse_values(text, f"--param {name}")
        parameters[name.strip()] = values if len(values) > 1 else values[0]
    return parameters


def render_reports(rows: Sequence[TensorReport]) -> None:
    """One line per changed tensor (names are never cut), then the not-captured warning."""
    from alloykit.lora.report import Capture, overall_error, shape_text

    width = max([len("tensor"), *(len(r.name) for r in rows)])
    console.print(
        f"[bold]{'tensor':<{width}}  {'captured':<12}  {'shape':>9}  {'rank':>4}  "
        f"{'energy kept':>11}  {'rel. error':>10}[/]"
    )
    for row in rows:
        missed = row.capture in (Capture.NOT_CAPTURED, Capture.EXCLUDED)
        line = (
            f"{escape(row.name):<{width}}  {row.capture.value:<12}  {shape_text(row.shape):>9}  "
            f"{'' if row.rank is None else row.rank:>4}  {row.energy:>11.4f}  "
            f"{row.relative_error:>10.4f}"
        )
        console.print(f"[yellow]{line}[/]" if missed else line)
    missed = [r for r in rows if r.capture in (Capture.NOT_CAPTURED, Capture.EXCLUDED)]
    if missed:
        console.print(
            f"[yellow]warning:[/] {len(missed)} changed tensors are not in the adapter "
            "(not captured / excluded above); --save-unfactorable saves 1-D ones in full"
        )
    console.print(f"overall relative error {overall_error(rows):.4f}")
