"""The method registry: each merge kernel with its declared parameter contract.

A kernel is a pure function ``kernel(tensors, base, **params) -> Tensor`` where ``tensors``
stacks the n contributing models along dim 0 (float32, one device), ``base`` is the base
model's tensor or ``None``, per-model parameters arrive as float32 tensors of shape ``[n]``
and global parameters as Python scalars. Random kernels also receive ``seed`` (an int).
A method that can merge a tensor a few rows at a time also has a ``streaming`` factory
(:mod:`alloykit.methods.streaming`); the engine then never holds whole tensors.
The contract is what recipe validation, ``alloykit methods`` and the docs table read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, TypedDict

import torch
from typing_extensions import Required

if TYPE_CHECKING:
    from typing_extensions import Unpack

from alloykit.methods.streaming import (
    KernelMerge,
    StreamingFactory,
    StreamingMerge,
    whole_tensor_kernel,
)

Kernel = Callable[..., torch.Tensor]


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


@dataclass(frozen=True)
class Method:
    """A registered merge method: kernel plus contract."""

    name: str
    kernel: Kernel
    summary: str
    reference: str
    params: tuple[Param, ...]
    base: BasePolicy
    min_models: int = 1
    max_models: int | None = None
    random: bool = False
    notes: str = ""
    streaming: StreamingFactory | None = None
    param_index: dict[str, Param] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "param_index", {p.name: p for p in self.params})

    def param(self, name: str) -> Param | None:
        return self.param_index.get(name)


_REGISTRY: dict[str, Method] = {}


class Contract(TypedDict, total=False):
    """A method's contract besides its name and kernel (the fields of :class:`Method`)."""

    summary: Required[str]
    reference: Required[str]
    params: tuple[Param, ...]
    base: Required[BasePolicy]
    min_models: int
    max_models: int | None
    random: bool
    notes: str


def register(
    name: str,
    *,
    elementwise: bool = False,
    stored_kernel: Kernel | None = None,
    **contract: Unpack[Contract],
) -> Callable[[Kernel], Kernel]:
    """Decorator registering ``kernel`` under ``name`` with its contract.

    ``elementwise`` declares that each output row depends only on the same rows of the inputs,
    so the engine may call the kernel on a few rows at a time; an elementwise method may add
    ``stored_kernel``, the same computation on bfloat16 inputs as stored, in float32
    (:attr:`~alloykit.methods.streaming.StreamingMerge.reads_stored`).
    """

    def wrap(kernel: Kernel) -> Kernel:
        def by_chunks(shape: tuple[int, ...], dtype: torch.dtype, **params: Any) -> StreamingMerge:
            return KernelMerge(kernel, params, stored_kernel=stored_kernel)

        streaming = by_chunks if elementwise else None
        _add(Method(name=name, kernel=kernel, streaming=streaming, **contract))
        return kernel

    return wrap


def register_streaming(
    name: str, streaming: StreamingFactory, **contract: Unpack[Contract]
) -> None:
    """Register a method given by its streaming form; its kernel is that form on one chunk."""
    _add(Method(name=name, kernel=whole_tensor_kernel(streaming), streaming=streaming, **contract))


def _add(method: Method) -> None:
    if method.name in _REGISTRY:
        raise ValueError(f"method {method.name!r} registered twice")
    _REGISTRY[method.name] = method


def get_method(name: str) -> Method:
    """The method called ``name``; ``KeyError`` if there is none."""
    return _REGISTRY[name]


def method_names() -> list[str]:
    return sorted(_REGISTRY)


def all_methods() -> list[Method]:
    return [_REGISTRY[n] for n in method_names()]
