"""What a merge method is: a declared contract, and the kernel attached to it on first use.

The contract is plain data (parameters with scope, default and valid range, base-model policy,
model counts) that recipe validation, ``alloykit methods`` and the docs table read without
importing torch. The kernel lives in the module the contract names
(:attr:`Method.kernel_module`), which attaches it when imported
(:func:`alloykit.methods.registry.register`); :attr:`Method.kernel` and
:attr:`Method.streaming` import that module the first time they are read, so only a merge
pays for torch.

A kernel is a pure function ``kernel(tensors, base, **params) -> Tensor`` where ``tensors``
stacks the n contributing models along dim 0 (float32, one device), ``base`` is the base
model's tensor or ``None``, per-model parameters arrive as float32 tensors of shape ``[n]``
and global parameters as Python scalars. Random kernels also receive ``seed`` (an int).
A method that can merge a tensor a few rows at a time also has a ``streaming`` factory
(:mod:`alloykit.methods.streaming`); the engine then never holds whole tensors.

A method's :attr:`Method.form` says how the engine feeds it: streaming (row chunks),
whole-tensor (one matrix at a time per worker, within the byte budget, its working memory
bounded by :attr:`Method.temporaries`), or either of them with statistics: per-model auxiliary
tensors of their own shapes (:class:`Statistic`: Gram matrices, Fisher diagonals) that the
kernel (or streaming factory) receives as keyword arguments, ``[n, *statistic shape]``
float32 on the compute device, or ``None`` where no model has that statistic for the tensor.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from alloykit.methods.streaming import Kernel, StreamingFactory


class Scope(str, Enum):
    """Whether a parameter takes one value per merge or one value per input model."""

    GLOBAL = "global"
    PER_MODEL = "per-model"


class BasePolicy(str, Enum):
    """How a method uses ``base_model``."""

    REQUIRED = "required"
    OPTIONAL = "optional"
    UNUSED = "unused"


class _Required:
    def __repr__(self) -> str:
        return "required"


REQUIRED: Any = _Required()


@dataclass(frozen=True)
class Param:
    """One parameter of a method: type, scope, default and valid range."""

    name: str
    type: type
    scope: Scope
    default: Any = REQUIRED
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] | None = None
    doc: str = ""

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def allowed(self) -> str:
        """Human-readable description of the accepted values."""
        if self.choices:
            return " | ".join(self.choices)
        if self.type is bool:
            return "true | false"
        lo = "-inf" if self.minimum is None else f"{self.minimum:g}"
        hi = "inf" if self.maximum is None else f"{self.maximum:g}"
        kind = "integer" if self.type is int else "number"
        return f"{kind} in [{lo}, {hi}]"

    def check(self, value: Any) -> Any:
        """Return ``value`` coerced to this parameter's type, or raise ``ValueError``."""
        if self.type is bool:
            if not isinstance(value, bool):
                raise ValueError(f"expected true or false, got {value!r}")
            return value
        if self.choices is not None:
            if value not in self.choices:
                raise ValueError(f"expected one of {self.allowed()}, got {value!r}")
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"expected a {self.allowed()}, got {value!r}")
        if self.type is int:
            if float(value) != int(value):
                raise ValueError(f"expected an integer, got {value!r}")
            value = int(value)
        else:
            value = float(value)
        if value != value:
            raise ValueError("expected a number, got NaN")
        if (self.minimum is not None and value < self.minimum) or (
            self.maximum is not None and value > self.maximum
        ):
            raise ValueError(f"expected a {self.allowed()}, got {value:g}")
        return value


TemporariesBound = Callable[[tuple[int, ...], int], int]
"""``(shape, models) -> float32 values``: a whole-tensor kernel's peak temporaries."""


class Form(str, Enum):
    """How the engine feeds a method a tensor (shown by ``alloykit methods`` and ``--dry-run``)."""

    STREAMING = "streaming"
    WHOLE_TENSOR = "whole-tensor"
    WITH_STATISTICS = "whole-tensor with statistics"
    STREAMING_WITH_STATISTICS = "streaming with statistics"


class StatisticShape(str, Enum):
    """The shape of a statistic of one weight ``W``, derived from ``W``'s shape."""

    GRAM = "gram"
    """``[in, in]`` for a 2-D weight ``[out, in]``: the Gram matrix of the layer's inputs."""
    DIAGONAL = "diagonal"
    """``W``'s own shape: one value per parameter (e.g. a diagonal Fisher)."""

    def of(self, shape: tuple[int, ...]) -> tuple[int, ...] | None:
        """The statistic's shape for a weight of ``shape``; ``None`` where it has none (a Gram
        of a tensor that is not a matrix)."""
        if self is StatisticShape.GRAM:
            return (shape[1], shape[1]) if len(shape) == 2 else None
        return shape


@dataclass(frozen=True)
class Statistic:
    """A per-model auxiliary input a method needs beside each weight.

    Statistics files key them ``"{name}:{tensor name}"`` (docs/engine.md); the kernel receives
    the models' statistics of the tensor being merged as the keyword argument ``name``.
    ``fallback`` says what the method does for a tensor without the statistic (a norm or a
    bias has no Gram matrix); every listed model must then lack it, never only some.
    """

    name: str
    shape: StatisticShape
    doc: str = ""
    fallback: str = ""


@dataclass(frozen=True)
class Implementation:
    """The code behind a contract: the whole-tensor kernel and, for a method that
    :attr:`~Method.streams`, the factory of its merge by row chunks."""

    kernel: Kernel
    streaming: StreamingFactory | None


_IMPLEMENTATIONS: dict[str, Implementation] = {}


@dataclass(frozen=True)
class Method:
    """A merge method's contract; its kernel comes from ``kernel_module`` when first used."""

    name: str
    summary: str
    reference: str
    params: tuple[Param, ...]
    base: BasePolicy
    kernel_module: str
    """The module whose import attaches this method's kernel."""
    min_models: int = 1
    max_models: int | None = None
    random: bool = False
    streams: bool = False
    """Whether the engine may merge a tensor a few rows at a time (:attr:`streaming` is set)."""
    raw_merge: str | None = None
    """The method's merge on bfloat16 bytes as stored, for the engine's torch-free raw path
    (:mod:`alloykit.engine.raw`): ``"module:factory"``, imported the first time a merge takes
    that path, where ``factory(method, per_model, globals, count, numel, seed)`` returns the
    merge of one tensor (a :class:`~alloykit.methods.stored.StoredMerge`), or ``None`` where
    these parameters need the torch path. Declaring it is all it takes for a method to run
    there; without it every tensor takes the torch path. Its result must equal the torch
    form's bit for bit (tests/methods/test_stored_merges.py)."""
    notes: str = ""
    statistics: tuple[Statistic, ...] = ()
    """Per-model statistics the kernel receives beside each tensor, whole (stacked ``[n, ...]``)
    even when the method streams: its streaming factory then gets them, and its chunks are
    rows of the weights only (``register_streaming``: a plain row-chunked kernel would be
    handed whole statistics beside partial rows)."""
    temporaries: float | TemporariesBound = 2.0
    """A whole-tensor kernel's peak temporaries: a number of float32 tensors the size of the
    output, or, where that number grows with the shape or the model count (an SVD's factors and
    workspace), a function ``(shape, models) -> values`` giving the float32 values the kernel
    holds at once beyond its stacked inputs (:mod:`alloykit.methods.working_sets`). Part of the
    working-memory bound the plan states per entry and the engine's budget admits."""
    param_index: dict[str, Param] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "param_index", {p.name: p for p in self.params})
        if not callable(self.temporaries) and self.temporaries < 0:
            raise ValueError(f"method {self.name!r}: temporaries must be >= 0")

    def temporary_values(self, shape: tuple[int, ...], models: int) -> int:
        """Float32 values the whole-tensor kernel holds at once beyond its inputs, for a tensor
        of ``shape`` merged from ``models`` models (see :attr:`temporaries`)."""
        if callable(self.temporaries):
            return int(self.temporaries(shape, models))
        return math.ceil(self.temporaries * math.prod(shape))

    @property
    def form(self) -> Form:
        """How the engine feeds this method a tensor."""
        if self.streams:
            return Form.STREAMING_WITH_STATISTICS if self.statistics else Form.STREAMING
        return Form.WITH_STATISTICS if self.statistics else Form.WHOLE_TENSOR

    def param(self, name: str) -> Param | None:
        return self.param_index.get(name)

    @property
    def kernel(self) -> Kernel:
        """The whole-tensor kernel (importing :attr:`kernel_module`, and torch, the first time)."""
        return implementation(self).kernel

    @property
    def streaming(self) -> StreamingFactory | None:
        """The factory of the merge by row chunks, or ``None`` if the method does not stream."""
        return implementation(self).streaming


def implementation(method: Method) -> Implementation:
    """``method``'s kernel and streaming factory, importing its kernel module the first time.

    Worker threads may ask at once: Python's per-module import lock makes them wait until one
    of them has imported the module, so each sees the kernel it registered.
    """
    found = _IMPLEMENTATIONS.get(method.name)
    if found is None:
        importlib.import_module(method.kernel_module)
        found = _IMPLEMENTATIONS.get(method.name)
    if found is None:
        raise ImportError(
            f"method {method.name!r}: its kernel module {method.kernel_module} registers no "
            "kernel for it"
        )
    return found


def attach(method: Method, found: Implementation, module: str) -> None:
    """Make ``found``, defined in ``module``, the implementation of ``method``.

    Only the module the contract names may attach it: that is the module :func:`implementation`
    imports, so a kernel defined anywhere else would be found or not depending on what happened
    to be imported before.
    """
    if module != method.kernel_module:
        raise ValueError(
            f"method {method.name!r} is declared as implemented in {method.kernel_module}, "
            f"not {module}"
        )
    if method.name in _IMPLEMENTATIONS:
        raise ValueError(f"method {method.name!r} registered twice")
    _IMPLEMENTATIONS[method.name] = found
