"""mergekit's rules for one parameter entry: name filters and gradients over depth.

These two functions decide which value a tensor gets; they follow mergekit 0.1.5 exactly so
that a recipe means the same thing in both tools (docs/recipes.md states the rules).
"""

from __future__ import annotations

from collections.abc import Sequence

Scalar = float | int | bool | str


def filter_matches(filter_: str | None, tensor_name: str) -> bool:
    """Whether an entry with ``filter_`` applies to ``tensor_name``.

    No filter and ``"*"`` match every tensor; any other filter is a plain substring test
    (not a glob, not a regex), which never matches an empty tensor name.
    """
    if filter_ is None or filter_ == "*":
        return True
    return bool(tensor_name) and filter_ in tensor_name


def is_numeric(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def evaluate_value(value: Scalar | Sequence[Scalar], t: float) -> Scalar:
    """A scalar as is, or a gradient's value at relative depth ``t`` in [0, 1].

    A gradient of n values places them at t = 0, 1/(n-1), ..., 1. Numbers are linearly
    interpolated between the two neighbouring knots; a gradient holding any boolean or
    string instead picks the knot at or below ``t`` (no interpolation).
    """
    if not isinstance(value, Sequence) or isinstance(value, str):
        return value
    last = len(value) - 1
    if not all(is_numeric(v) for v in value):
        return value[int(t * last)]
    scaled = t * last
    low = int(scaled)
    high = min(last, low + 1)
    frac = scaled - low
    return (1 - frac) * value[low] + frac * value[high]
