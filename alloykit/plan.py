"""The Plan: one entry per output tensor, decided before any data moves.

The plan names every output tensor's shape, dtype, inputs, method and resolved parameters,
and every input tensor that is not used, with the reason. ``--dry-run`` prints it;
:mod:`alloykit.planner` builds it from a recipe.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from math import prod
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alloykit.checkpoint.source import ModelSource
from alloykit.dtypes import F32, DType
from alloykit.methods import Method, get_method
from alloykit.recipe.model import Recipe, Scalar
from alloykit.vocab.plan import VocabularyPlan

if TYPE_CHECKING:
    from alloykit.checkpoint.statistics import StatisticsFile

STATISTICS_CHUNK_SCALE = 16
"""Chunks of streaming methods with statistics are this many times larger: a 1.1B
``down_proj`` (``[2048, 5632]``, Grams ``[5632, 5632]``) then takes 3 chunks instead of 44,
and RegMean merges it as fast as whole (20 s of CPU; 29 s at the default chunk size)."""


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
    dtype: DType
    method: str
    inputs: tuple[TensorRef, ...]
    base: TensorRef | None
    per_model: dict[str, tuple[Scalar, ...]]
    globals: dict[str, Scalar]
    seed: int = 0
    common_rows: int | None = None  # vocab mismatch: merge rows [:common_rows], rest from base
    statistics: dict[str, tuple[TensorRef | None, ...]] = field(default_factory=dict)
    """Per declared statistic, each input model's statistic of this tensor (``model`` names
    the model, ``name`` the key in its statistics file), or ``None`` where it has none."""

    @property
    def nbytes(self) -> int:
        return self.dtype.itemsize * prod(self.shape)

    @property
    def all_inputs(self) -> list[TensorRef]:
        """The inputs, then the base: the order in which the engine stacks them."""
        return [*self.inputs, *([self.base] if self.base is not None else [])]

    @property
    def row_numel(self) -> int:
        """Values per row (along dimension 0); a 0-dimensional tensor is one row of one."""
        return prod(self.shape[1:])

    @property
    def merged_rows(self) -> int:
        """Rows the method merges; rows past ``common_rows`` are copied from the lead model."""
        if not self.shape:
            return 1
        return self.common_rows if self.common_rows is not None else self.shape[0]


@dataclass(frozen=True)
class ParameterSite:
    """What an entry's parameter values were resolved from: the output tensor's name, its
    relative depth ``t``, its slice, and each merged model's recipe entry (by key path, e.g.
    ``models[2]``; ``base_model`` for a base merged as one more model) with that model's
    tensor name. A recipe that differs only in parameter values re-resolves them from here
    without planning again (:func:`alloykit.planner.reparameterised`)."""

    tensor: str
    t: float
    slice_index: int | None
    models: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class DroppedTensor:
    model: str
    name: str
    reason: str


@dataclass
class PlanOptions:
    """Command-line overrides that shape the plan."""

    allow_pickle: bool = False
    statistics: dict[str, Path] = field(default_factory=dict)
    """Statistics files by model reference, for models whose recipe entry names none (e.g.
    computed from the entry's ``data:``)."""
    dtype: DType = F32  # compute dtype
    out_dtype: DType | None = None
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
    compute_dtype: DType
    seed: int
    notes: list[str] = field(default_factory=list)
    description: str | None = None  # what the plan builds, when more than its merge method
    vocabulary: VocabularyPlan | None = None  # the output vocabulary, when the models' differ
    chat_template: str | None = None  # Jinja text to install, resolved from the recipe's value
    statistics: dict[str, StatisticsFile] = field(default_factory=dict)
    """The statistics file of each model that has one, by model reference."""
    parameter_sites: dict[str, ParameterSite] = field(default_factory=dict)
    """Where each merged entry's parameters come from, by entry name."""

    @property
    def output_bytes(self) -> int:
        return sum(e.nbytes for e in self.entries)

    def chunk_rows(self, entry: PlanEntry, chunk_elements: int) -> int:
        """Rows of ``entry`` merged at a time: about ``chunk_elements`` values per input for
        methods that stream (:mod:`alloykit.methods.streaming`), all rows otherwise.

        A streaming method with statistics goes through its whole statistics for every chunk
        (RegMean: each model's Gram), so its chunks are :data:`STATISTICS_CHUNK_SCALE` times
        larger."""
        rows = entry.merged_rows
        method = get_method(entry.method)
        if len(entry.shape) < 2 or rows == 0 or not method.streams:
            return max(rows, 1)
        if method.statistics:
            chunk_elements *= STATISTICS_CHUNK_SCALE
        return max(1, min(rows, chunk_elements // max(1, entry.row_numel)))

    def working_bytes(self, entry: PlanEntry, chunk_elements: int) -> int:
        """The working-memory bound of computing one entry, in bytes.

        Streaming: a chunk of each input as read and in the compute dtype, plus the method's
        temporaries, plus twice the statistics: the stack they are read into, and as much
        again for what the method derives from them (RegMean's float64 factor of the Gram sum
        is two of one model's Grams). Whole-tensor: :meth:`whole_tensor_bytes`, the staging
        buffers and the kernel's temporaries together. This is what the engine's budget counts;
        the whole merge's resident peak is :func:`alloykit.engine.memory.estimated_peak_bytes`.
        """
        count = len(entry.inputs) + (entry.base is not None)
        rows = self.chunk_rows(entry, chunk_elements) if entry.shape else 1
        size = self.compute_dtype.itemsize
        if get_method(entry.method).streams or not entry.shape:
            chunk = rows * entry.row_numel * size * (2 * count + 3)
            return chunk + 2 * self.statistics_bytes(entry)
        return sum(self.whole_tensor_bytes(entry))

    def whole_tensor_bytes(self, entry: PlanEntry) -> tuple[int, int]:
        """``(staging, temporaries)`` of merging ``entry`` whole, in bytes.

        Staging is what a worker keeps from tensor to tensor and grows to its largest tensor:
        every input as stored, the inputs stacked in the compute dtype, the output. The
        temporaries live while the kernel runs: the statistics (as read and stacked) and what
        the method declares (:meth:`~alloykit.methods.contract.Method.temporary_values`, float32
        at least: the SVD methods widen half precision).
        """
        shape = (entry.merged_rows, *entry.shape[1:])  # rows past a vocabulary mismatch are copied
        numel = prod(shape)
        stored = sum(
            self.sources[ref.model].tensors[ref.name].dtype.itemsize for ref in entry.all_inputs
        )
        stacked = len(entry.all_inputs) * self.compute_dtype.itemsize
        staging = numel * (stored + stacked + entry.dtype.itemsize)
        method = get_method(entry.method)
        values = method.temporary_values(shape, len(entry.inputs))
        temporaries = values * max(self.compute_dtype.itemsize, F32.itemsize)
        return staging, temporaries + 2 * self.statistics_bytes(entry)

    def statistics_bytes(self, entry: PlanEntry) -> int:
        """Bytes of the statistics read to merge ``entry``."""
        total = 0
        for refs in entry.statistics.values():
            for ref in refs:
                if ref is not None:
                    total += self.statistics[ref.model].entries[ref.name].nbytes
        return total

    def largest_working(
        self, chunk_elements: int, *, whole_tensor: bool = False
    ) -> tuple[PlanEntry | None, int]:
        """The entry with the largest :meth:`working_bytes` (among those merged whole, with
        ``whole_tensor``), and that bound."""
        best: tuple[PlanEntry | None, int] = (None, 0)
        for entry in self.entries:
            if whole_tensor and (get_method(entry.method).streams or not entry.shape):
                continue
            bound = self.working_bytes(entry, chunk_elements)
            if bound > best[1]:
                best = (entry, bound)
        return best

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
        for model, statistics in sorted(self.statistics.items()):
            stat = statistics.path.stat()
            digest.update(f"{model}:{statistics.path}:{stat.st_size}:{stat.st_mtime_ns}".encode())
        for entry in self.entries:
            digest.update(f"{entry.name}{entry.shape}{entry.dtype}".encode())
        if self.vocabulary is not None:
            digest.update(self.vocabulary.digest().encode())
        return digest.hexdigest()


def config_dtype(entries: Iterable[PlanEntry]) -> DType | None:
    """The dtype most floating output tensors have (the first planned, in a tie): what the
    output's config.json names as its dtype. None when no output tensor is floating."""
    counts = Counter(e.dtype for e in entries if e.dtype.is_floating_point)
    return counts.most_common(1)[0][0] if counts else None


def tensor_seed(seed: int, name: str) -> int:
    """Per-tensor seed: depends only on the recipe seed and the tensor's name."""
    digest = hashlib.blake2b(f"{seed}\0{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)
