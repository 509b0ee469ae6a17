"""Parameter settings: raw YAML values → checked :class:`ParamSetting` objects.

A setting is a scalar, a gradient (list of values over depth), a ``{filter, value}`` entry or
a list of such entries; every value, including each element of a gradient, is checked against
the method's :class:`Param` contract here, at load time, so a bad value is reported with its
key path before any model is opened.
"""

from __future__ import annotations

import difflib
from functools import cache
from typing import Any, Literal, NoReturn

from pydantic import TypeAdapter, ValidationError

from alloykit.methods import Method, Param, Scope, all_methods
from alloykit.recipe.document import fail
from alloykit.recipe.model import ConditionalValue, Parameters, ParamSetting, Scalar

Level = Literal["model", "slice", "top"]
_ENTRY_KEYS = ("filter", "value")


def parse_parameters(
    raw: dict[str, Any] | None,
    path: str,
    method: Method,
    level: Level,
    warnings: list[tuple[str, str]],
) -> Parameters:
    """Check the ``parameters:`` mapping found at ``path`` against ``method``'s contract.

    A name that another method takes (mergekit's own tests give ``weight`` to ``slerp``) is
    left out with a ``(key path, message)`` appended to ``warnings``, since mergekit ignores
    it; any other unknown name is an error with the closest valid name.
    """
    settings: Parameters = {}
    for name, value in (raw or {}).items():
        key_path = f"{path}.{name}"
        param = method.param(name)
        if param is None:
            takers = [other.name for other in all_methods() if other.param(name) is not None]
            if not takers:
                _unknown_parameter(key_path, name, method)
            warnings.append((key_path, _ignored_message(name, method, takers)))
            continue
        if level == "model" and param.scope is Scope.GLOBAL:
            fail(
                key_path,
                f"'{name}' is a global parameter of {method.name}: it takes one value for the "
                "whole merge, not one per model",
                "move it to the top-level parameters: (or to the slice's parameters:)",
            )
        settings[name] = parse_setting(value, key_path, param)
    return settings


def parse_setting(raw: Any, path: str, param: Param) -> ParamSetting:
    """One parameter's setting in any of mergekit's forms."""
    if isinstance(raw, dict):
        return ParamSetting((_parse_entry(raw, path, param),), path)
    if isinstance(raw, list):
        if not raw:
            fail(path, "empty list", f"give a value: {param.allowed()}")
        if all(isinstance(item, dict) for item in raw):
            entries = tuple(_parse_entry(item, f"{path}[{i}]", param) for i, item in enumerate(raw))
            return ParamSetting(entries, path)
        if any(isinstance(item, dict) for item in raw):
            fail(
                path,
                "mixes plain values with {filter, value} entries",
                "use either a gradient list of values or a list of {filter, value} entries",
            )
    return ParamSetting((ConditionalValue(_parse_value(raw, path, param)),), path)


def _parse_entry(raw: dict[str, Any], path: str, param: Param) -> ConditionalValue:
    for key in raw:
        if key not in _ENTRY_KEYS:
            close = difflib.get_close_matches(str(key), _ENTRY_KEYS, n=1)
            suggestion = f"did you mean '{close[0]}'? " if close else ""
            fail(f"{path}.{key}", "unknown key", f"{suggestion}an entry has filter: and value:")
    if "value" not in raw:
        fail(f"{path}.value", "required key is missing", "each entry needs a value:")
    filter_ = raw.get("filter")
    if filter_ is not None and not isinstance(filter_, str):
        fail(
            f"{path}.filter",
            f"expected a string (a substring of tensor names), got {filter_!r}",
            "e.g. filter: self_attn",
        )
    return ConditionalValue(_parse_value(raw["value"], f"{path}.value", param), filter_)


def _parse_value(raw: Any, path: str, param: Param) -> Scalar | tuple[Scalar, ...]:
    if isinstance(raw, list):
        if not raw:
            fail(path, "empty list", f"give a value: {param.allowed()}")
        return tuple(check_value(item, f"{path}[{i}]", param) for i, item in enumerate(raw))
    return check_value(raw, path, param)


def check_value(raw: Any, path: str, param: Param) -> Scalar:
    """``raw`` coerced to ``param``'s type and checked against its range, or a RecipeError."""
    hint = f"'{param.name}' accepts: {param.allowed()}"
    if raw is None:
        fail(path, "no value given", hint)
    if isinstance(raw, (list, dict)):
        fail(path, f"expected a single value, got {raw!r}", hint)
    try:
        return param.check(_coerce(raw, param))
    except ValueError as error:
        fail(path, str(error), hint)


def _coerce(raw: Any, param: Param) -> Any:
    """Apply mergekit's (pydantic's) lenient conversions: ``"1e-3"`` → 0.001, ``1`` → true.

    Booleans stay booleans for numeric parameters: ``weight: true`` is an error here.
    """
    if isinstance(raw, bool) or param.choices is not None or param.type not in (bool, int, float):
        return raw
    try:
        return _adapter(param.type).validate_python(raw)
    except ValidationError:
        return raw


@cache
def _adapter(kind: type) -> TypeAdapter[Any]:
    return TypeAdapter(kind)


def _ignored_message(name: str, method: Method, takers: list[str]) -> str:
    shown = ", ".join(takers[:6]) + (f" and {len(takers) - 6} more" if len(takers) > 6 else "")
    return (
        f"'{name}' is not a parameter of {method.name} (it is one of {shown}); ignored, as "
        "mergekit does"
    )


def _unknown_parameter(key_path: str, name: str, method: Method) -> NoReturn:
    names = [p.name for p in method.params]
    close = difflib.get_close_matches(name, names, n=1)
    if close:
        suggestion = f"did you mean '{close[0]}'? "
    else:
        anywhere = sorted({p.name for other in all_methods() for p in other.params})
        close = difflib.get_close_matches(name, anywhere, n=1)
        suggestion = f"did you mean '{close[0]}' (which {method.name} ignores)? " if close else ""
    if not names:
        fail(
            key_path,
            f"unknown parameter '{name}': {method.name} takes no parameters",
            f"{suggestion}remove it",
        )
    fail(
        key_path,
        f"unknown parameter '{name}' for merge method {method.name}",
        f"{suggestion}{method.name} takes: {', '.join(names)}",
    )
