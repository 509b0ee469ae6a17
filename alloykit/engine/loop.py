"""The one per-entry loop: passes over chunks, then the merge of each chunk, narrowed and written.

Every output tensor is merged by :func:`merge_entry`, whichever path reads it: the torch path
(:mod:`alloykit.engine.tensors`: chunks are torch tensors, any method, any device) or the raw
path (:mod:`alloykit.engine.raw`: chunks are addresses of bfloat16 bytes as stored, merged by
the fused kernels with no torch). A path supplies an :class:`EntryReader` (how a chunk is read
and how merged rows are narrowed and written) and the entry's merge (its passes and its
per-chunk merge, :class:`~alloykit.methods.streaming.StreamingMerge` or
:class:`~alloykit.methods.stored.StoredMerge`); the order of the work, the finiteness checks
and the errors users see are here, once. Nothing here imports torch.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from alloykit.errors import NonFiniteError, PlanError

if TYPE_CHECKING:
    from alloykit.plan import PlanEntry, TensorRef

ChunkT = TypeVar("ChunkT")


class EntryMerge(Protocol[ChunkT]):
    """A method's merge of one tensor: whole-tensor passes, then one merge per chunk."""

    def passes(self) -> Iterator[Callable[[ChunkT], None]]: ...

    def merge(self, chunk: ChunkT) -> Any: ...


class EntryReader(Protocol[ChunkT]):
    """How one path reads an entry's inputs a chunk of rows at a time and writes its rows."""

    def prepare(self, merging: Any) -> None:
        """Choose how chunks are read for ``merging`` (before any is read)."""
        ...

    def hold(self) -> None:
        """Keep the inputs in memory for several passes, where they are small enough."""
        ...

    def chunks(self, step: int, *, check: bool) -> Iterator[ChunkT]:
        """The merged rows' inputs in chunks of ``step`` rows, in row order; with ``check``,
        raise :func:`non_finite_input` for an input value that is NaN or infinite."""
        ...

    def write(self, chunk: ChunkT, merged: Any) -> bool:
        """Narrow ``merged`` (the merge of ``chunk``) to the output dtype and hand it to the
        sink; ``False``, writing nothing, when a merged value is NaN or infinite."""
        ...

    def finish(self, step: int) -> None:
        """Write what the merge does not make (rows past a vocabulary mismatch), then tell the
        sink the tensor is complete."""
        ...


def merge_entry(
    entry: PlanEntry,
    reader: EntryReader[ChunkT],
    make_merge: Callable[[], EntryMerge[ChunkT]],
    step: int,
) -> None:
    """Merge ``entry`` with the merge ``make_merge`` gives, reading and writing by ``reader``.

    Inputs are checked finite during the first pass over them (a kernel may discard a NaN, by
    trimming, and hide it); the merged rows are checked as they are narrowed.
    """
    try:
        merging = make_merge()
        reader.prepare(merging)
        passes = merging.passes()
        first = next(passes, None)
        if first is not None:
            reader.hold()
        checked = False
        for observe in itertools.chain([first] if first is not None else [], passes):
            for chunk in reader.chunks(step, check=not checked):
                observe(chunk)
            checked = True
        for chunk in reader.chunks(step, check=not checked):
            if not reader.write(chunk, merging.merge(chunk)):
                raise NonFiniteError(
                    f"merging {entry.name!r} with {entry.method!r} produced NaN or infinite values",
                    "check the method's parameters (e.g. weights summing to zero with normalize)",
                )
    except ValueError as exc:  # kernels report inputs they cannot merge this way
        raise PlanError(
            f"tensor {entry.name!r}: method {entry.method!r} cannot merge it: {exc}",
            "adjust the method's parameters for this tensor (see `alloykit methods`)",
        ) from exc
    reader.finish(step)


def non_finite_input(ref: TensorRef, nan: bool) -> NonFiniteError:
    """The error for input ``ref`` holding NaN (``nan``) or infinite values."""
    return NonFiniteError.in_input(ref.model, ref.name, nan)
