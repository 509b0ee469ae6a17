"""The public method API: one decorated function becomes a merge method.

:func:`merge_method` reads the function's signature and builds the same
:class:`~alloykit.methods.contract.Method` contract and
:class:`~alloykit.methods.contract.Implementation` as the built-in methods have, so a user
method is validated in recipes, listed by ``alloykit methods`` and run by the engine exactly
like ``linear`` or ``ties``. The signature is the contract:

- the first parameter receives the contributing models' tensors stacked along dim 0;
- a parameter named ``base`` receives the base model's tensor: annotated ``Tensor`` the method
  requires a base model, ``Tensor | None`` it takes one optionally, absent it uses none;
- a parameter named ``seed`` (an ``int``) makes the method random: it receives a seed derived
  from the recipe's seed and the tensor's name;
- every other parameter is a recipe parameter: ``float``, ``int`` and ``bool`` take one value
  per merge, ``Literal["a", "b"]`` one of those strings, and ``torch.Tensor`` or
  ``PerModel[float]`` one number per model (arriving as a float32 tensor of shape ``[n]``).
  A default makes it optional; ``Annotated[float, Range(0, 1), "what it does"]`` gives its
  valid range and its description.

``docs/methods-api.md`` has a complete example. This module imports no torch: it recognises
``torch.Tensor`` annotations by name, so ``import alloykit`` stays torch-free.
"""

from __future__ import annotations

import inspect
import re
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import wraps
from typing import Annotated, Any, Literal

from alloykit.errors import MethodDefinitionError
from alloykit.methods.contract import REQUIRED, BasePolicy, Implementation, Method, Param, Scope
from alloykit.methods.registry import add_method, row_chunks
from alloykit.methods.streaming import Kernel

KernelForm = Literal["elementwise", "rows", "whole"]
"""How the engine may feed a method: ``elementwise`` (each output value depends only on the
inputs' values at the same place) and ``rows`` (each output row only on the same input rows)
stream a few rows at a time; ``whole`` gets every tensor whole, as one chunk."""

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_SCALARS = (float, int, bool)


@dataclass(frozen=True)
class Range:
    """Valid values of a numeric parameter, bounds included: ``Annotated[float, Range(0, 1)]``."""

    minimum: float | None = None
    maximum: float | None = None


class _PerModelMark:
    def __repr__(self) -> str:
        return "PerModel"


_PER_MODEL = _PerModelMark()


class PerModel:
    """``PerModel[float]``: a parameter that takes one value per input model.

    The kernel receives the values as a float32 tensor of shape ``[n]`` (n models, in recipe
    order); a plain ``torch.Tensor`` annotation means the same.
    """

    def __class_getitem__(cls, item: Any) -> Any:
        return Annotated[item, _PER_MODEL]


def merge_method(
    name: str | None = None,
    *,
    summary: str | None = None,
    reference: str = "",
    form: KernelForm = "whole",
    base: BasePolicy | str | None = None,
    min_models: int = 1,
    max_models: int | None = None,
    params: Sequence[Param] = (),
    notes: str = "",
) -> Callable[[Kernel], Kernel]:
    """Register the decorated function as the merge method ``name`` (default: its own name).

    ``summary`` defaults to the docstring's first line; ``reference`` cites the method
    (title + arXiv id). ``form`` says whether the engine may merge a tensor a few rows at a
    time (``"elementwise"``, ``"rows"``) or must hand it whole (``"whole"``, the default: right
    for any function, at the cost of holding whole tensors). ``base`` overrides the policy read
    from the ``base`` parameter; ``min_models``/``max_models`` bound the number of models
    besides the base. ``params`` replaces the parameters of the same names read from the
    signature (:class:`~alloykit.methods.contract.Param`, for what annotations cannot say).

    The function is returned unchanged, so it can still be called directly (and tested).
    A bad declaration raises :class:`~alloykit.errors.MethodDefinitionError`.
    """

    def wrap(function: Kernel) -> Kernel:
        method, kernel = method_of(
            function,
            name=name,
            summary=summary,
            reference=reference,
            form=form,
            base=base,
            min_models=min_models,
            max_models=max_models,
            params=params,
            notes=notes,
        )
        add_method(method, Implementation(kernel, row_chunks(kernel) if method.streams else None))
        return function

    return wrap


def method_of(
    function: Kernel,
    *,
    name: str | None = None,
    summary: str | None = None,
    reference: str = "",
    form: KernelForm = "whole",
    base: BasePolicy | str | None = None,
    min_models: int = 1,
    max_models: int | None = None,
    params: Sequence[Param] = (),
    notes: str = "",
) -> tuple[Method, Kernel]:
    """The contract :func:`merge_method` declares for ``function``, and the kernel the engine
    calls (``kernel(tensors, base, **params)``), without registering either."""
    method_name = name or function.__name__
    where = f"merge method {method_name!r} ({function.__module__}.{function.__qualname__})"
    if not _NAME.match(method_name):
        raise MethodDefinitionError(
            f"{where}: invalid name", "use lowercase letters, digits and _ (e.g. my_merge)"
        )
    if form not in typing.get_args(KernelForm):
        raise MethodDefinitionError(
            f"{where}: unknown form {form!r}", "use 'elementwise', 'rows' or 'whole'"
        )
    hints = _hints(function, where)
    signature = inspect.signature(function)
    parameters = list(signature.parameters.values())
    if not parameters or parameters[0].kind not in (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    ):
        raise MethodDefinitionError(
            f"{where}: the first parameter must take the stacked model tensors",
            "def my_merge(tensors: torch.Tensor, base: torch.Tensor | None, *, weight: ...)",
        )
    declared = {p.name: p for p in params}
    taken: list[Param] = []
    has_base = random = False
    policy = BasePolicy.UNUSED
    for parameter in parameters[1:]:
        if parameter.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise MethodDefinitionError(
                f"{where}: *{parameter.name} cannot be a recipe parameter",
                "name every parameter the method takes",
            )
        if parameter.kind is inspect.Parameter.POSITIONAL_ONLY:
            raise MethodDefinitionError(
                f"{where}: parameter {parameter.name!r} is positional-only",
                "recipe parameters are passed by name",
            )
        hint = hints.get(parameter.name, inspect.Parameter.empty)
        if parameter.name == "base":
            has_base = True
            policy = BasePolicy.OPTIONAL if _is_optional(hint) else BasePolicy.REQUIRED
        elif parameter.name == "seed":
            if hint is not int:
                raise MethodDefinitionError(
                    f"{where}: parameter 'seed' must be annotated int",
                    "a random method receives an int seed derived from the recipe's seed",
                )
            random = True
        elif parameter.name in declared:
            taken.append(_with_default(declared.pop(parameter.name), parameter, where))
        else:
            taken.append(_param(parameter, hint, where))
    if declared:
        raise MethodDefinitionError(
            f"{where}: params= declares {', '.join(sorted(declared))}, which the function "
            "does not take",
            "declare only parameters of the function's signature",
        )
    if base is not None:
        policy = _base_policy(base, where)
        if policy is not BasePolicy.UNUSED and not has_base:
            raise MethodDefinitionError(
                f"{where}: base={policy.value!r} but the function takes no 'base' parameter",
                "add a parameter `base: torch.Tensor | None`",
            )
    if min_models < 1 or (max_models is not None and max_models < min_models):
        raise MethodDefinitionError(
            f"{where}: model counts min_models={min_models}, max_models={max_models}",
            "min_models >= 1 and max_models >= min_models (or None)",
        )
    summary = summary or _first_line(function.__doc__)
    if not summary:
        raise MethodDefinitionError(
            f"{where}: no summary", "give the function a docstring, or pass summary='...'"
        )
    method = Method(
        name=method_name,
        summary=summary,
        reference=reference,
        params=tuple(taken),
        base=policy,
        kernel_module=function.__module__,
        min_models=min_models,
        max_models=max_models,
        random=random,
        streams=form != "whole",
        notes=notes,
    )
    return method, function if has_base else _without_base(function)


def _hints(function: Callable[..., Any], where: str) -> dict[str, Any]:
    try:
        return typing.get_type_hints(function, include_extras=True)
    except Exception as exc:  # an annotation naming something the module cannot resolve
        raise MethodDefinitionError(
            f"{where}: cannot resolve its annotations: {exc}",
            "import every type the signature names at the top of its module",
        ) from exc


def _param(parameter: inspect.Parameter, hint: Any, where: str) -> Param:
    """The recipe parameter a signature parameter declares, from its annotation and default."""
    label = f"{where}: parameter {parameter.name!r}"
    if hint is inspect.Parameter.empty:
        raise MethodDefinitionError(
            f"{label} has no annotation",
            "annotate it: float, int, bool, Literal['a', 'b'], torch.Tensor or PerModel[float]",
        )
    metadata: tuple[Any, ...] = ()
    if typing.get_origin(hint) is Annotated:
        hint, *rest = typing.get_args(hint)
        metadata = tuple(rest)
    scope = Scope.GLOBAL
    if _PER_MODEL in metadata or _is_tensor(hint):
        scope, hint = Scope.PER_MODEL, float if _is_tensor(hint) else hint
        if hint is not float:
            raise MethodDefinitionError(
                f"{label}: per-model parameters are numbers",
                "annotate it PerModel[float] (or torch.Tensor)",
            )
    bounds = [m for m in metadata if isinstance(m, Range)]
    docs = [m for m in metadata if isinstance(m, str)]
    choices: tuple[str, ...] | None = None
    if typing.get_origin(hint) is Literal:
        choices = typing.get_args(hint)
        if not choices or not all(isinstance(c, str) for c in choices):
            raise MethodDefinitionError(
                f"{label}: Literal choices must be strings", "e.g. Literal['mean', 'sum']"
            )
        kind: type = str
    elif hint in _SCALARS:
        kind = hint
    else:
        raise MethodDefinitionError(
            f"{label}: unsupported annotation {_describe(hint)}",
            "use float, int, bool, Literal['a', 'b'], torch.Tensor or PerModel[float]",
        )
    if bounds and (choices is not None or kind is bool):
        raise MethodDefinitionError(
            f"{label}: a Range applies to numbers only", "remove the Range from its annotation"
        )
    default = REQUIRED if parameter.default is inspect.Parameter.empty else parameter.default
    declared = Param(
        parameter.name,
        kind,
        scope,
        default,
        minimum=bounds[0].minimum if bounds else None,
        maximum=bounds[0].maximum if bounds else None,
        choices=choices,
        doc=docs[0] if docs else "",
    )
    if not declared.required:
        try:
            declared.check(default)
        except ValueError as exc:
            raise MethodDefinitionError(
                f"{label}: its default does not fit its declaration: {exc}",
                "make the default one of the values the parameter accepts",
            ) from exc
    return declared


def _with_default(declared: Param, parameter: inspect.Parameter, where: str) -> Param:
    """An explicitly declared parameter; the signature's default fills one it leaves required."""
    if declared.required and parameter.default is not inspect.Parameter.empty:
        return replace(declared, default=parameter.default)
    return declared


def _base_policy(base: BasePolicy | str, where: str) -> BasePolicy:
    try:
        return BasePolicy(base)
    except ValueError:
        raise MethodDefinitionError(
            f"{where}: unknown base policy {base!r}", "use 'required', 'optional' or 'unused'"
        ) from None


def _is_tensor(hint: Any) -> bool:
    """``torch.Tensor``, recognised without importing torch."""
    module, name = getattr(hint, "__module__", None), getattr(hint, "__name__", None)
    return (module, name) == ("torch", "Tensor")


def _is_optional(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in (
        typing.get_args(hint)
    )


def _describe(hint: Any) -> str:
    return getattr(hint, "__name__", None) or repr(hint)


def _first_line(doc: str | None) -> str:
    return inspect.cleandoc(doc).splitlines()[0].strip() if doc and doc.strip() else ""


def _without_base(function: Kernel) -> Kernel:
    """The engine calls every kernel as ``kernel(tensors, base, **params)``."""

    @wraps(function)
    def kernel(tensors: Any, base: Any, **params: Any) -> Any:
        return function(tensors, **params)

    return kernel
