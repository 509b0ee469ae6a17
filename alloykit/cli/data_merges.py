"""Data-driven merges that need the models run, not one tensor at a time: ``alloykit
greedy-soup``, ``alloykit adamerging`` and ``alloykit regmean-pp``. Each writes an ordinary
model directory whose card records what the data decided."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from alloykit.cli.guard import guarded
from alloykit.cli.options import Debug, Force

console = Console(highlight=False, soft_wrap=True)

Models = Annotated[list[Path], typer.Option("--model", help="A fine-tuned model directory.")]
Data = Annotated[
    list[Path],
    typer.Option("--data", help="Data of each --model, in order (task dir, task.yaml, JSONL)."),
]
Out = Annotated[Path, typer.Argument(help="Output model directory.")]
Device = Annotated[str, typer.Option(help="cpu or cuda[:N].")]
Threads = Annotated[
    int | None, typer.Option(min=1, help="CPU threads for torch (default: torch's).")
]


def _threads(threads: int | None) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def greedy_soup_command(
    out: Out,
    model: Models,
    task: Annotated[list[Path], typer.Option(help="Validation task(s) scoring the soups.")],
    split: Annotated[str, typer.Option(help="Split that scores the soups.")] = "validation",
    limit: Annotated[int | None, typer.Option(min=1, help="Examples per task.")] = None,
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    device: Device = "cpu",
    threads: Threads = None,
    force: Force = False,
    debug: Debug = False,
) -> None:
    """Greedy soup (arXiv:2203.05482): add models best-first while validation does not drop."""
    with guarded(debug):
        from alloykit.calibrate.greedy_soup import greedy_soup, write_soup

        _threads(threads)
        soup = greedy_soup(
            model, task, split=split, limit=limit, batch_size=batch_size, device=device
        )
        written = write_soup(soup, out, force=force)
        console.print(
            f"wrote {written}: {len(soup.kept)} of {len(model)} models kept, "
            f"{split} score {soup.score:.4f}"
        )


def adamerging_command(
    out: Out,
    base: Annotated[Path, typer.Option(help="The base model the experts were tuned from.")],
    model: Models,
    data: Data,
    granularity: Annotated[str, typer.Option(help="layer | task")] = "layer",
    steps: Annotated[int, typer.Option(min=0)] = 500,
    lr: Annotated[float, typer.Option(min=0.0)] = 1e-3,
    samples: Annotated[int, typer.Option(min=1, help="Prompts per --data.")] = 64,
    batch_size: Annotated[int, typer.Option(min=1)] = 16,
    seed: int = 0,
    device: Device = "cpu",
    threads: Threads = None,
    force: Force = False,
    debug: Debug = False,
) -> None:
    """AdaMerging (arXiv:2310.02575): learn task-vector coefficients by entropy minimisation."""
    with guarded(debug):
        from alloykit.calibrate.adamerging import AdaMergingSettings, adamerging, card
        from alloykit.calibrate.checkpoint_out import write_checkpoint
        from alloykit.errors import AlloyError

        if granularity not in ("layer", "task"):
            raise AlloyError(f"--granularity: {granularity!r}", "use layer or task")
        _threads(threads)
        settings = AdaMergingSettings(
            granularity=granularity,  # type: ignore[arg-type]
            steps=steps,
            lr=lr,
            samples=samples,
            batch_size=batch_size,
            seed=seed,
        )
        result = adamerging(base, model, data, settings, device=device)
        written = write_checkpoint(
            result.state, base, out, card=card(result, base, settings), force=force
        )
        entropy = f"{result.entropy[0]:.4f} → {result.entropy[-1]:.4f}" if result.entropy else "-"
        console.print(f"wrote {written} (entropy {entropy})")


def regmean_pp_command(
    out: Out,
    model: Models,
    data: Data,
    alpha: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.95,
    samples: Annotated[int, typer.Option(min=1, help="Examples per --data.")] = 256,
    seed: int = 0,
    batch_size: Annotated[int, typer.Option(min=1)] = 16,
    device: Device = "cpu",
    threads: Threads = None,
    force: Force = False,
    debug: Debug = False,
) -> None:
    """RegMean++ (arXiv:2508.03121): RegMean block by block on the merged blocks' outputs."""
    with guarded(debug):
        from alloykit.calibrate.checkpoint_out import write_checkpoint
        from alloykit.calibrate.regmean_pp import card, regmean_pp

        _threads(threads)
        result = regmean_pp(
            model,
            data,
            alpha=alpha,
            samples=samples,
            seed=seed,
            batch_size=batch_size,
            device=device,
        )
        written = write_checkpoint(
            result.state, model[0], out, card=card(result, model, alpha), force=force
        )
        console.print(f"wrote {written} ({result.layers} blocks, {result.forwards} passes)")
