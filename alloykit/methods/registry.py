"""The method registry: every declared method by name, and the kernels attached to them.

Contracts come from :mod:`alloykit.methods.catalog` and are read without torch. Each kernel
module attaches its kernels to contracts already declared, by name, with :func:`register` or
:func:`register_streaming` when it is imported, which a contract's
:attr:`~alloykit.methods.contract.Method.kernel` does on first use.

Methods users define (:func:`alloykit.methods.define.merge_method`) arrive with contract and
kernel together (:func:`add_method`); those of installed packages are imported the first time
a name is not found or the methods are listed (:mod:`alloykit.methods.plugins`), so a merge
with a built-in method never imports them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from alloykit.errors import MethodDefinitionError
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
BUILT_IN = frozenset(_REGISTRY)


def get_method(name: str) -> Method:
    """The method called ``name``; ``KeyError`` if there is none (after loading plugins)."""
    method = _REGISTRY.get(name)
    if method is None:
        load_plugins()
        method = _REGISTRY[name]
    return method


def method_names() -> list[str]:
    load_plugins()
    return sorted(_REGISTRY)


def all_methods() -> list[Method]:
    return [_REGISTRY[n] for n in method_names()]


def load_plugins() -> None:
    """Import the methods of installed packages (entry-point group ``alloykit.methods``), once."""
    from alloykit.methods import plugins

    plugins.load_once()


def add_method(method: Method, found: Implementation) -> None:
    """Declare a method that is not in the catalog, with its implementation (user methods)."""
    if method.name in BUILT_IN:
        raise MethodDefinitionError(
            f"merge method {method.name!r} ({method.kernel_module}) has the name of a built-in "
            "method",
            "choose another name",
        )
    if method.name in _REGISTRY:
        raise MethodDefinitionError(
            f"merge method {method.name!r} ({method.kernel_module}) is already defined by "
            f"{_REGISTRY[method.name].kernel_module}",
            "choose another name, or import the module that defines it only once",
        )
    attach(method, found, method.kernel_module)
    _REGISTRY[method.name] = method


def row_chunks(kernel: Kernel, stored_kernel: Kernel | None = None) -> StreamingFactory:
    """The streaming factory of an elementwise (or row-wise) kernel: the kernel on each chunk."""

    def by_chunks(shape: tuple[int, ...], dtype: torch.dtype, **params: Any) -> StreamingMerge:
        return KernelMerge(kernel, params, stored_kernel=stored_kernel)

    return by_chunks


def register(name: str, *, stored_kernel: Kernel | None = None) -> Callable[[Kernel], Kernel]:
    """Decorator attaching ``kernel`` to the declared method ``name``.

    If the contract :attr:`~alloykit.methods.contract.Method.streams`, the kernel is
    elementwise (each output row depends only on the same rows of the inputs), so the engine
    calls it on a few rows at a time; it may then add ``stored_kernel``, the same computation
    on bfloat16 inputs as stored, in float32
    (:attr:`~alloykit.methods.streaming.StreamingMerge.reads_stored`). Both kernels of such a
    method must leave their inputs as they are: the engine hands them read-only views
    (:attr:`~alloykit.methods.streaming.StreamingMerge.reads_views`).
    """

    def wrap(kernel: Kernel) -> Kernel:
        method = _declared(name)
        if stored_kernel is not None and not method.streams:
            raise ValueError(f"method {name!r}: a stored_kernel needs a contract that streams")
        if method.streams and method.statistics:
            raise ValueError(
                f"method {name!r}: a method with statistics streams by its own merge "
                "(register_streaming), not by its kernel on row chunks"
            )
        streaming = row_chunks(kernel, stored_kernel) if method.streams else None
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
