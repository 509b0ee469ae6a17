"""The method registry: every declared method by name, and the kernels attached to them.

Contracts come from :mod:`alloykit.methods.catalog` and are read without torch. Each kernel
module attaches its kernels to contracts already declared, by name, with :func:`register` or
:func:`register_streaming` when it is imported, which a contract's
:attr:`~alloykit.methods.contract.Method.kernel` does on first use.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from alloykit.methods.catalog import CATALOG
from alloykit.methods.contract import Implementation, Method, attach
from alloykit.methods.streaming import (
    Kernel,
    KernelMerge,
    StreamingFactory,
    StreamingMerge,
    whole_tensor_kernel,
)

if TYPE_CHECKING:
    import torch


def _by_name(methods: Iterable[Method]) -> dict[str, Method]:
    registry: dict[str, Method] = {}
    for method in methods:
        if method.name in registry:
            raise ValueError(f"method {method.name!r} declared twice")
        registry[method.name] = method
    return registry


_REGISTRY = _by_name(CATALOG)


def get_method(name: str) -> Method:
    """The method called ``name``; ``KeyError`` if there is none."""
    return _REGISTRY[name]


def method_names() -> list[str]:
    return sorted(_REGISTRY)


def all_methods() -> list[Method]:
    return [_REGISTRY[n] for n in method_names()]


def register(name: str, *, stored_kernel: Kernel | None = None) -> Callable[[Kernel], Kernel]:
    """Decorator attaching ``kernel`` to the declared method ``name``.

    If the contract :attr:`~alloykit.methods.contract.Method.streams`, the kernel is
    elementwise (each output row depends only on the same rows of the inputs), so the engine
    calls it on a few rows at a time; it may then add ``stored_kernel``, the same computation
    on bfloat16 inputs as stored, in float32
    (:attr:`~alloykit.methods.streaming.StreamingMerge.reads_stored`).
    """

    def wrap(kernel: Kernel) -> Kernel:
        method = _declared(name)
        if stored_kernel is not None and not method.streams:
            raise ValueError(f"method {name!r}: a stored_kernel needs a contract that streams")

        def by_chunks(shape: tuple[int, ...], dtype: torch.dtype, **params: Any) -> StreamingMerge:
            return KernelMerge(kernel, params, stored_kernel=stored_kernel)

        streaming = by_chunks if method.streams else None
        attach(method, Implementation(kernel, streaming), kernel.__module__)
        return kernel

    return wrap


def register_streaming(name: str, streaming: StreamingFactory) -> None:
    """Attach a method given by its streaming form; its kernel is that form on one chunk."""
    method = _declared(name)
    if not method.streams:
        raise ValueError(f"method {name!r} has a streaming form but its contract does not stream")
    attach(method, Implementation(whole_tensor_kernel(streaming), streaming), streaming.__module__)


def _declared(name: str) -> Method:
    if name not in _REGISTRY:
        raise ValueError(
            f"a kernel is registered for method {name!r}, which alloykit.methods.catalog "
            "does not declare"
        )
    return _REGISTRY[name]
