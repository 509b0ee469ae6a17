"""The search space of a spec: its genes, and the recipe each point of the space stands for.

A searched value is a ``{min, max}`` mapping anywhere a recipe takes a parameter value
(top-level ``parameters:``, a model's or a slice's); ``scale: log`` spreads it evenly in the
logarithm instead, for values such as learning rates that span several orders of magnitude.
With ``layer_groups: k`` it becomes a gradient of ``k`` genes over the depth (mergekit
interpolates a list of values over the layers); with ``filters: [self_attn, mlp]`` each
filter gets its own genes, and the tensors no filter matches get the last ones (mergekit's
``{filter, value}`` entries). With ``methods:`` the merge method is a searched choice too.
A point is a mapping ``{gene name: value}``; :meth:`Space.recipe` writes the plain
mergekit-format recipe it stands for.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alloykit.search.spec import SearchSpec, SpecError

Point = dict[str, Any]
Location = tuple[str | int, ...]
SIGNIFICANT_DIGITS = 5
"""Searched values are rounded so that the recipes written read well; what is evaluated is the
rounded value, so nothing written differs from what was scored. Significant digits rather than
decimals, so that a range such as ``[1e-5, 1e-3]`` is not rounded onto a few steps."""
SCALES = ("linear", "log")


@dataclass(frozen=True)
class Gene:
    """One searched number: its bounds and where it goes in the recipe."""

    name: str
    low: float
    high: float
    location: (
        Location  # path of the parameter in the recipe, e.g. ("models", 0, "parameters", "weight")
    )
    filter: str | None = None
    anchor: int = 0  # position in the gradient over the layers
    log: bool = False  # spread evenly in the logarithm (``scale: log``)

    def value(self, unit: float) -> float:
        """The value at ``unit`` in [0, 1] of the range."""
        unit = min(1.0, max(0.0, float(unit)))
        if self.log:
            low, high = math.log(self.low), math.log(self.high)
            return _rounded(math.exp(low + unit * (high - low)))
        return _rounded(self.low + unit * (self.high - self.low))

    def unit(self, value: float) -> float:
        if self.log:
            low, high = math.log(self.low), math.log(self.high)
            return 0.0 if high == low else (math.log(value) - low) / (high - low)
        span = self.high - self.low
        return 0.0 if span == 0 else (value - self.low) / span


def _rounded(value: float) -> float:
    return float(f"{value:.{SIGNIFICANT_DIGITS}g}")


@dataclass(frozen=True)
class MethodChoice:
    """The merge method as a searched choice among ``options``."""

    name: str
    options: tuple[str, ...]

    def value(self, unit: float) -> str:
        index = min(len(self.options) - 1, int(min(1.0, max(0.0, float(unit))) * len(self.options)))
        return self.options[index]

    def unit(self, value: str) -> float:
        return (self.options.index(value) + 0.5) / len(self.options)


METHOD_GENE = "method"


class Space:
    """The genes of a spec and the recipes of its points."""

    def __init__(self, spec: SearchSpec) -> None:
        self.spec = spec
        self.template = _resolved_paths(spec.recipe, spec.base_dir)
        self.genes: list[Gene] = []
        for location, bounds in _ranges(self.template):
            self.genes.extend(_genes_of(location, bounds, spec.layer_groups, spec.filters))
        methods = spec.methods or [str(self.template.get("merge_method", ""))]
        self.choice = MethodChoice(METHOD_GENE, tuple(methods)) if len(methods) > 1 else None
        self.methods = tuple(methods)
        if not self.genes and self.choice is None:
            raise SpecError(
                "search spec: the recipe has nothing to search",
                "mark values to search as {min: ..., max: ...}, or list several methods:",
            )

    @property
    def dimensions(self) -> int:
        return len(self.genes) + (self.choice is not None)

    def point(self, units: list[float]) -> Point:
        """The point at ``units`` (one number in [0, 1] per dimension, the method last)."""
        point: Point = {g.name: g.value(u) for g, u in zip(self.genes, units, strict=False)}
        if self.choice is not None:
            point[METHOD_GENE] = self.choice.value(units[len(self.genes)])
        return point

    def units(self, point: Point) -> list[float]:
        """The inverse of :meth:`point` (up to rounding)."""
        units = [g.unit(float(point[g.name])) for g in self.genes]
        if self.choice is not None:
            units.append(self.choice.unit(point[METHOD_GENE]))
        return units

    def method_of(self, point: Point) -> str:
        return str(point.get(METHOD_GENE, self.methods[0]))

    def recipe(self, point: Point) -> dict[str, Any]:
        """The plain mergekit-format recipe of ``point`` (no ranges left)."""
        recipe = copy.deepcopy(self.template)
        method = self.method_of(point)
        recipe["merge_method"] = method
        values: dict[Location, dict[tuple[str | None, int], float]] = {}
        for gene in self.genes:
            values.setdefault(gene.location, {})[(gene.filter, gene.anchor)] = point[gene.name]
        for location, by_key in values.items():
            _put(recipe, location, _setting(by_key, self.spec.layer_groups, self.spec.filters))
        if self.choice is not None:
            _drop_foreign_parameters(recipe, method)
        return recipe

    def describe(self) -> list[str]:
        lines = [
            f"{g.name}: [{g.low:g}, {g.high:g}]" + (" (log scale)" if g.log else "")
            for g in self.genes
        ]
        if self.choice is not None:
            lines.append(f"{METHOD_GENE}: one of {', '.join(self.choice.options)}")
        return lines


def _is_range(value: Any) -> bool:
    return isinstance(value, dict) and {"min", "max"} <= set(value) <= {"min", "max", "scale"}


Bounds = tuple[float, float, bool]
"""A range's low and high ends, and whether it is searched on a log scale."""


def _ranges(recipe: dict[str, Any]) -> list[tuple[Location, Bounds]]:
    """Every ``{min, max}`` under a ``parameters:`` mapping, in the recipe's order."""
    found: list[tuple[Location, Bounds]] = []

    def walk(node: Any, location: Location) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if location and location[-1] == "parameters" and _is_range(value):
                    found.append(((*location, key), _bounds(value, (*location, key))))
                else:
                    walk(value, (*location, key))
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, (*location, index))

    walk(recipe, ())
    return found


def _bounds(value: dict[str, Any], location: Location) -> Bounds:
    where = _dotted(location)
    try:
        low, high = float(value["min"]), float(value["max"])
    except (TypeError, ValueError):
        raise SpecError(f"recipe.{where}: min and max must be numbers, got {value!r}") from None
    if low > high:
        raise SpecError(f"recipe.{where}: min {low:g} is above max {high:g}", "swap them")
    scale = value.get("scale", "linear")
    if scale not in SCALES:
        raise SpecError(f"recipe.{where}.scale: {scale!r} is not a scale", "use linear or log")
    if scale == "log" and low <= 0:
        raise SpecError(
            f"recipe.{where}: a log scale needs min above 0, got {low:g}",
            "give a positive min, or search it on the linear scale",
        )
    return low, high, scale == "log"


def _genes_of(location: Location, bounds: Bounds, groups: int, filters: list[str]) -> list[Gene]:
    base = _dotted(location).replace(".parameters.", ".").removeprefix("parameters.")
    genes = []
    for filter_ in [*filters, None] if filters else [None]:
        for anchor in range(groups):
            name = base
            if filter_ is not None:
                name += f"@{filter_}"
            elif filters:
                name += "@rest"
            if groups > 1:
                name += f"#{anchor}"
            low, high, log = bounds
            genes.append(Gene(name, low, high, location, filter_, anchor, log))
    return genes


def _setting(by_key: dict[tuple[str | None, int], float], groups: int, filters: list[str]) -> Any:
    """The recipe value of one searched parameter: a number, a gradient, or filter entries."""

    def value(filter_: str | None) -> Any:
        anchors = [by_key[(filter_, a)] for a in range(groups)]
        return anchors[0] if groups == 1 else anchors

    if not filters:
        return value(None)
    return [{"filter": f, "value": value(f)} for f in filters] + [{"value": value(None)}]


def _put(recipe: dict[str, Any], location: Location, value: Any) -> None:
    node: Any = recipe
    for key in location[:-1]:
        node = node[key]
    node[location[-1]] = value


def _drop_foreign_parameters(recipe: dict[str, Any], method: str) -> None:
    """Remove the parameters ``method`` does not take (a searched choice of methods shares one
    recipe, and each method takes its own parameters)."""
    from alloykit.methods import get_method

    contract = get_method(method)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            parameters = node.get("parameters")
            if isinstance(parameters, dict):
                for name in [n for n in parameters if contract.param(n) is None]:
                    del parameters[name]
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(recipe)


def _resolved_paths(recipe: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    """The recipe with model references that are paths relative to the spec made absolute, and
    every mapping and list its own (YAML anchors and aliases share one object, which
    ``copy.deepcopy`` keeps shared: a value written for one model would land in the others)."""
    recipe = _unshared(recipe)

    def resolve(reference: Any) -> Any:
        if isinstance(reference, str) and not Path(reference).is_absolute():
            candidate = base_dir / reference
            if candidate.exists():
                return str(candidate.resolve())
        return reference

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key in ("model", "base_model"):
                if key in node:
                    node[key] = resolve(node[key])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(recipe)
    return recipe


def _unshared(node: Any) -> Any:
    if isinstance(node, dict):
        return {key: _unshared(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_unshared(value) for value in node]
    return copy.deepcopy(node)


def _dotted(location: Location) -> str:
    text = ""
    for key in location:
        text += f"[{key}]" if isinstance(key, int) else (f".{key}" if text else str(key))
    return text
