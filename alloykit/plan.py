"""The Plan: one entry per output tensor, decided before any data moves.

The plan names every output tensor's shape, dtype, inputs, method and resolved parameters,
and every input tensor that is not used, with the reason. ``--dry-run`` prints it;
:mod:`alloykit.planner` builds it from a recipe.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import torch

from alloykit.checkpoint.source import ModelSource
from alloykit.errors import PlanError
from alloykit.methods import Method, get_method
from alloykit.recipe.model import Recipe, Scalar

DTYPE_ALIASES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float64": torch.float64,
}


def parse_dtype(name: str, where: str) -> torch.dtype:
    dtype = DTYPE_ALIASES.get(name.lower().removeprefix("torch."))
    if dtype is None:
        raise PlanError(
            f"{where}: unknown dtype {name!r}", f"use one of {', '.join(sorted(DTYPE_ALIASES))}"
        )
    return dtype


@dataclass(frozen=True)
class TensorRef:
    """One input tensor: which model, which name."""

    model: str
    name: str


@dataclass
class PlanEntry:
    """How one output tensor is made."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    method: str
    inputs: tuple[TensorRef, ...]
    base: TensorRef | None
    per_model: dict[str, tuple[Scalar, ...]]
    globals: dict[str, Scalar]
    seed: int = 0
    common_rows: int | None = None  # vocab mismatch: merge rows [:common_rows], rest from base

    @property
    def nbytes(self) -> int:
        n = torch.empty((), dtype=self.dtype).element_size()
        for d in self.shape:
            n *= d
        return n

    @property
    def row_numel(self) -> int:
        """Values per row (along dimension 0); a 0-dimensional tensor is one row of one."""
        n = 1
        for d in self.shape[1:]:
            n *= d
        return n

    @property
    def merged_rows(self) -> int:
        """Rows the method merges; rows past ``common_rows`` are copied from the lead model."""
        if not self.shape:
            return 1
        return self.common_rows if self.common_rows is not None else self.shape[0]


@dataclass(frozen=True)
class DroppedTensor:
    model: str
    name: str
    reason: str


@dataclass
class PlanOptions:
    """Command-line overrides that shape the plan."""

    allow_pickle: bool = False
    dtype: str | None = None  # compute dtype
    out_dtype: str | None = None
    seed: int | None = None
    drop_unmapped: bool = False
    vocab_mismatch: str | None = None


@dataclass
class Plan:
    recipe: Recipe
    method: Method
    sources: dict[str, ModelSource]
    entries: list[PlanEntry]
    dropped: list[DroppedTensor]
    warnings: list[str]
    config: dict[str, Any]
    reference: str
    tokenizer_source: str | None
    compute_dtype: torch.dtype
    seed: int
    notes: list[str] = field(default_factory=list)
    description: str | None = None  # what the plan builds, when more than its merge method

    @property
    def output_bytes(self) -> int:
        return sum(e.nbytes for e in self.entries)

    def chunk_rows(self, entry: PlanEntry, chunk_elements: int) -> int:
        """Rows of ``entry`` merged at a time: about ``chunk_elements`` values per input for
        methods that stream (:mod:`alloykit.methods.streaming`), all rows otherwise."""
        rows = entry.merged_rows
        if len(entry.shape) < 2 or rows == 0 or get_method(entry.method).streaming is None:
            return max(rows, 1)
        return max(1, min(rows, chunk_elements // max(1, entry.row_numel)))

    def working_bytes(self, entry: PlanEntry, chunk_elements: int) -> int:
        """Rough peak bytes to compute one entry: a chunk of each input in the compute dtype,
        plus the method's temporaries."""
        count = len(entry.inputs) + (entry.base is not None)
        rows = self.chunk_rows(entry, chunk_elements) if entry.shape else 1
        size = torch.empty((), dtype=self.compute_dtype).element_size()
        return rows * entry.row_numel * size * (2 * count + 3)

    def estimated_peak_bytes(self, threads: int, budget_bytes: int, chunk_elements: int) -> int:
        """Working memory at the busiest moment: ``threads`` large groups, capped by the budget."""
        largest = max((self.working_bytes(e, chunk_elements) for e in self.entries), default=0)
        return max(largest, min(budget_bytes, threads * largest))

    def fingerprint(self) -> str:
        """Identifies this exact plan, so a resumed merge never mixes two different plans."""
        digest = hashlib.sha256()
        digest.update(json.dumps(self.recipe.raw, sort_keys=True, default=str).encode())
        digest.update(str(self.seed).encode())
        digest.update(str(self.compute_dtype).encode())
        for ref, source in sorted(self.sources.items()):
            digest.update(ref.encode())
            for path in source.files:
                stat = path.stat()
                digest.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns}".encode())
        for entry in self.entries:
            digest.update(f"{entry.name}{entry.shape}{entry.dtype}".encode())
        return digest.hexdigest()


def tensor_seed(seed: int, name: str) -> int:
    """Per-tensor seed: depends only on the recipe seed and the tensor's name."""
    digest = hashlib.blake2b(f"{seed}\0{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)
