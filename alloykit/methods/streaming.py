"""Merging one tensor in row chunks: statistics passes first, then the merge of each chunk.

Peak memory and cache traffic stay small when a tensor is merged a few rows at a time, but some
methods need a quantity of the whole tensor first (slerp's angle, Model Stock's cosine, TIES's
magnitude cut-off). A :class:`StreamingMerge` states those as passes: the engine feeds every
chunk to each pass's observer, in row order, before asking for the next pass, then feeds the
chunks again to :meth:`StreamingMerge.merge`. The whole-tensor kernel of such a method is the
same object fed a single chunk (:func:`merge_whole`), so there is one implementation to test.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: method contracts import this module without torch
    import torch

Kernel = Callable[..., "torch.Tensor"]
"""``kernel(tensors, base, **params) -> Tensor``: a method's merge of whole tensors."""
Observer = Callable[["Chunk"], None]


@dataclass(frozen=True)
class Chunk:
    """Rows ``[first_row, first_row + rows)`` of every input of one output tensor."""

    tensors: torch.Tensor  # [n, rows, *rest], compute dtype
    base: torch.Tensor | None  # [rows, *rest]
    first_row: int
    shape: tuple[int, ...]  # the whole tensor's shape
    stored: bool = False
    """``tensors`` and ``base`` are bfloat16 as stored in the checkpoints, to be computed in
    float32 (given only to merges whose :attr:`StreamingMerge.reads_stored` is set). They are
    read-only: they may view inputs held for several passes, and ``tensors`` may then be a
    stack of contiguous slices that are not adjacent."""
    views: bool = False
    """``tensors`` and ``base``, in the compute dtype, view inputs the engine keeps (resident
    in an :class:`alloykit.Merger`): read-only, given only to merges whose
    :attr:`StreamingMerge.reads_views` is set."""

    out: torch.Tensor | None = None
    """Where the merged rows may be written, float32 and contiguous (the caller's tensor,
    e.g. a live model's parameter): a merge that writes them there returns ``out``, and
    nothing is copied. Merges may ignore it."""

    @property
    def read_only(self) -> bool:
        """Whether ``tensors`` and ``base`` must be left as they are (:attr:`stored`,
        :attr:`views`)."""
        return self.stored or self.views

    def widened(self, dtype: torch.dtype) -> Chunk:
        """This chunk with its inputs in ``dtype``, in memory of its own (which the merge may
        overwrite): what a merge's torch path computes with."""
        if not self.read_only and self.tensors.dtype == dtype:
            return self
        base = None if self.base is None else self.base.to(dtype)
        return Chunk(self.tensors.to(dtype, copy=True), base, self.first_row, self.shape)

    @property
    def offset(self) -> int:
        """Flat index of this chunk's first element in the whole tensor."""
        row = 1
        for d in self.shape[1:]:
            row *= d
        return self.first_row * row


class StreamingMerge(ABC):
    """How one output tensor is merged from chunks fed in row order."""

    reads_stored = False
    """Whether the observers and :meth:`merge` take :attr:`Chunk.stored` chunks (computing in
    float32 from bfloat16 values a block at a time, as the fused kernels do): the engine then
    saves widening every chunk to float32 first, a pass through memory (docs/engine.md)."""
    reads_views = False
    """Whether the observers and :meth:`merge` take :attr:`Chunk.views` chunks, leaving their
    inputs as they are (or computing on :meth:`Chunk.widened` copies): the engine then saves
    copying resident inputs into a chunk buffer on every merge."""

    def passes(self) -> Iterator[Observer]:
        """Observers of whole-tensor statistics, one per pass over all chunks (none by default).

        Code between two ``yield`` statements runs once the previous pass has seen every chunk.
        """
        return iter(())

    @abstractmethod
    def merge(self, chunk: Chunk) -> torch.Tensor:
        """The merged rows of ``chunk``; chunks arrive in row order.

        ``merge`` and the observers of :meth:`passes` may overwrite ``chunk.tensors`` (saving
        a temporary the size of the chunk): every pass gets freshly read chunks. Chunks that
        are :attr:`Chunk.read_only` are the exception.
        """


class KernelMerge(StreamingMerge):
    """A kernel applied to each chunk as it comes: right for elementwise kernels, and for any
    kernel when the whole tensor is one chunk."""

    def __init__(
        self,
        kernel: Kernel,
        params: dict[str, Any],
        *,
        stored_kernel: Kernel | None = None,
    ) -> None:
        self.kernel = kernel
        self.params = params
        self.stored_kernel = stored_kernel  # the kernel of stored chunks, computing in float32
        # a method with a stored kernel leaves its inputs as they are (see registry.register)
        self.reads_stored = self.reads_views = stored_kernel is not None

    def merge(self, chunk: Chunk) -> torch.Tensor:
        if chunk.stored:
            assert self.stored_kernel is not None
            return self.stored_kernel(chunk.tensors, chunk.base, **self.params)
        return self.kernel(chunk.tensors, chunk.base, **self.params)


StreamingFactory = Callable[..., StreamingMerge]
"""``factory(shape, dtype, **params) -> StreamingMerge`` for one tensor of ``shape`` computed
in ``dtype``, with the kernel's parameters."""


def merge_whole(
    merge: StreamingMerge, tensors: torch.Tensor, base: torch.Tensor | None
) -> torch.Tensor:
    """Run ``merge`` over the whole tensor as a single chunk."""
    shape = tuple(tensors.shape[1:])
    for observe in merge.passes():
        observe(Chunk(tensors.clone(), base, 0, shape))  # the caller's tensors stay as they are
    return merge.merge(Chunk(tensors.clone(), base, 0, shape))


def whole_tensor_kernel(factory: StreamingFactory) -> Kernel:
    """The ordinary kernel ``kernel(tensors, base, **params)`` of a streaming method."""

    def kernel(tensors: torch.Tensor, base: torch.Tensor | None, **params: Any) -> torch.Tensor:
        merge = factory(tuple(tensors.shape[1:]), tensors.dtype, **params)
        return merge_whole(merge, tensors, base)

    return kernel
