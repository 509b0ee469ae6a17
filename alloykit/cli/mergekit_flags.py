"""mergekit-yaml's command-line flags, accepted by ``alloykit merge``.

A script written for ``mergekit-yaml RECIPE OUT --cuda --lazy-unpickle ...`` runs unchanged as
``alloykit merge RECIPE OUT ...``. Each flag either keeps its meaning (``--cuda``,
``--random-seed``, ``--no-copy-tokenizer``, ...) or asks for something alloykit always does
(lazy reads, bounded memory, cloned outputs): those are accepted and, where a user could expect
a different outcome, answered by a one-line note. docs/mergekit.md lists every flag.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

PANEL = "mergekit-yaml flags"


def _flag(declaration: str, text: str) -> typer.models.OptionInfo:
    return typer.Option(declaration, help=text, rich_help_panel=PANEL)


Cuda = Annotated[bool, _flag("--cuda/--no-cuda", "Same as --device cuda.")]
GpuRich = Annotated[
    bool,
    _flag("--gpu-rich", "Same as --device cuda (the rest of it is what alloykit always does)."),
]
LazyUnpickle = Annotated[
    bool,
    _flag(
        "--lazy-unpickle/--no-lazy-unpickle",
        "Unnecessary: alloykit never unpickles eagerly (safetensors are read by offsets; .bin "
        "files only with --allow-pickle, one tensor at a time, weights_only).",
    ),
]
AllowCrimes = Annotated[
    bool,
    _flag(
        "--allow-crimes/--no-allow-crimes",
        "Unnecessary: models of different architectures are matched by tensor name and shape; "
        "tensors with no place in the output are refused (or dropped with --drop-unmapped).",
    ),
]
CopyTokenizer = Annotated[
    bool,
    _flag("--copy-tokenizer/--no-copy-tokenizer", "Copy a tokenizer to the output."),
]
WriteModelCard = Annotated[
    bool,
    _flag("--write-model-card/--no-write-model-card", "Write README.md describing the merge."),
]
SafeSerialization = Annotated[
    bool,
    _flag(
        "--safe-serialization/--no-safe-serialization",
        "Unnecessary: the output is always safetensors (a pickle file can run code when loaded).",
    ),
]
TrustRemoteCode = Annotated[
    bool,
    _flag(
        "--trust-remote-code/--no-trust-remote-code",
        "Unnecessary: alloykit never runs a model repository's code; it reads config.json and "
        "tensors only.",
    ),
]
LowCpuMemory = Annotated[
    bool,
    _flag(
        "--low-cpu-memory/--no-low-cpu-memory",
        "Unnecessary: memory is bounded by --memory-budget, whatever the model size.",
    ),
]
ReadToGpu = Annotated[
    bool,
    _flag(
        "--read-to-gpu/--no-read-to-gpu",
        "Unnecessary: with --device cuda each chunk goes to the GPU as it is read.",
    ),
]
MultiGpu = Annotated[
    bool,
    _flag("--multi-gpu/--no-multi-gpu", "Accepted; alloykit computes on one device (--device)."),
]
CloneTensors = Annotated[
    bool,
    _flag(
        "--clone-tensors/--no-clone-tensors",
        "Unnecessary: every output tensor is written from its own buffer, a layer used twice "
        "included.",
    ),
]
AsyncWrite = Annotated[
    bool,
    _flag(
        "--async-write/--no-async-write",
        "Unnecessary: tensors are written at their planned offsets as they finish.",
    ),
]
WriteThreads = Annotated[
    int | None,
    typer.Option(
        min=1, help="Unnecessary: writes happen on the --threads workers.", rich_help_panel=PANEL
    ),
]
NumThreads = Annotated[
    int | None,
    typer.Option("--num-threads", "-j", min=1, help="Same as --threads.", rich_help_panel=PANEL),
]
TransformersCache = Annotated[
    Path | None,
    typer.Option(
        help="Hugging Face cache directory in which hub ids are looked up (offline).",
        rich_help_panel=PANEL,
    ),
]
LoraMergeCache = Annotated[
    Path | None,
    typer.Option(
        help="Unnecessary: model+adapter references are applied while reading, nothing is stored.",
        rich_help_panel=PANEL,
    ),
]
LoraMergeDtype = Annotated[
    str | None,
    typer.Option(
        help="Unnecessary: adapters are applied in float32 and the model's stored dtype kept.",
        rich_help_panel=PANEL,
    ),
]
Verbose = Annotated[
    int,
    typer.Option(
        "--verbose",
        "-v",
        count=True,
        help="Print the plan and notes before merging, one line per output tensor.",
        rich_help_panel=PANEL,
    ),
]
Quiet = Annotated[
    bool,
    _flag(
        "--quiet/--no-quiet",
        "No progress bar, notes or summary line (errors and warnings still shown).",
    ),
]


@dataclass(frozen=True)
class MergekitFlags:
    """The mergekit flags given on one command line, and what alloykit makes of them."""

    cuda: bool = False
    gpu_rich: bool = False
    safe_serialization: bool = True
    trust_remote_code: bool = False
    multi_gpu: bool = False
    lora_merge_cache: Path | None = None
    num_threads: int | None = None
    transformers_cache: Path | None = None

    def device(self, device: str) -> str:
        """``--cuda`` / ``--gpu-rich`` pick CUDA unless ``--device`` named one already;
        ``--device auto`` (mergekit's) is CUDA when torch sees a GPU, else the CPU."""
        if device == "auto":
            import torch

            return "cuda" if torch.cuda.is_available() else "cpu"
        if (self.cuda or self.gpu_rich) and device == "cpu":
            return "cuda"
        return device

    def threads(self, threads: int) -> int:
        return self.num_threads if self.num_threads is not None else threads

    def notes(self) -> list[str]:
        """One line for each flag whose effect differs from what a mergekit user expects."""
        notes = []
        if self.trust_remote_code:
            notes.append(
                "--trust-remote-code has no effect: alloykit never runs a model repository's "
                "code (it reads config.json and the tensors)"
            )
        if not self.safe_serialization:
            notes.append(
                "--no-safe-serialization has no effect: the output is safetensors (a pickle "
                "file can run code when loaded)"
            )
        if self.multi_gpu or self.gpu_rich:
            notes.append("--multi-gpu: alloykit computes on one device (choose it with --device)")
        if self.lora_merge_cache is not None:
            notes.append(
                "--lora-merge-cache has no effect: adapters are applied while reading, "
                "nothing is stored"
            )
        return notes

    @contextmanager
    def hub_cache(self) -> Iterator[None]:
        """Look hub ids up in ``--transformers-cache`` for the duration of the command."""
        if self.transformers_cache is None:
            yield
            return
        previous = os.environ.get("HF_HUB_CACHE")
        os.environ["HF_HUB_CACHE"] = str(self.transformers_cache.expanduser())
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop("HF_HUB_CACHE", None)
            else:
                os.environ["HF_HUB_CACHE"] = previous
