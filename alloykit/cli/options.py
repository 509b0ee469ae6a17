"""Command-line options shared by several commands, declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Debug = Annotated[bool, typer.Option("--debug", help="Show full tracebacks.")]
Force = Annotated[bool, typer.Option("--force", help="Replace an existing OUT.")]
AllowPickle = Annotated[
    bool, typer.Option("--allow-pickle", help="Load .bin checkpoints (weights_only).")
]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Print the plan and exit.")]
OutDir = Annotated[Path | None, typer.Argument(help="Output model directory.")]
Threads = Annotated[int, typer.Option(min=1, help="Tensors processed at once.")]
OutDtype = Annotated[str | None, typer.Option(help="Output dtype (default: recipe, else inputs').")]
OutShardSize = Annotated[str, typer.Option(help="Max bytes per output shard.")]
MemoryBudget = Annotated[
    str | None,
    typer.Option(
        help="Bytes of tensors in flight, e.g. 8GB (default: half the available memory, at least "
        "1GB; --dry-run shows it).",
    ),
]
HashInputs = Annotated[
    bool,
    typer.Option(
        "--hash-inputs",
        help="Record the SHA-256 of every input file in the model card (about 1 s per GB).",
    ),
]
Fsync = Annotated[
    bool,
    typer.Option(
        "--fsync/--no-fsync",
        help="Flush the output to disk before it takes its final name, so that it survives a "
        "power cut (atomic either way for a crash or Ctrl-C of alloykit).",
    ),
]
CheckLoads = Annotated[
    bool,
    typer.Option(
        "--check-loads/--no-check-loads",
        help="Before committing OUT, check that transformers finds every tensor its config "
        "implies and no other (meta device: nothing is allocated).",
    ),
]
IntermediateDir = Annotated[
    Path | None,
    typer.Option(
        "--intermediate-dir",
        "-I",
        help="Multi-document recipes: where named merges are written (default: OUT when every "
        "merge is named, else OUT.intermediate).",
    ),
]
Lazy = Annotated[
    bool,
    typer.Option(
        "--lazy/--no-lazy",
        help="Multi-document recipes: keep named merges already built (default) or rebuild them.",
    ),
]
