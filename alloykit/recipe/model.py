"""The validated recipe as plain dataclasses: what the planner consumes.

``load_recipe`` turns YAML (alloykit's or mergekit's format) into these objects; everything
after that point works with them and never sees raw dictionaries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from alloykit.recipe.setting import Scalar, evaluate_value, filter_matches


@dataclass(frozen=True)
class ConditionalValue:
    """One entry of a parameter setting.

    ``value`` is a scalar, or a tuple of values over the layers (a gradient): numbers are
    interpolated, booleans and strings are picked. ``filter`` restricts the entry to tensors
    whose name contains it; ``None`` (and mergekit's ``"*"``) matches all.
    """

    value: Scalar | tuple[Scalar, ...]
    filter: str | None = None


@dataclass(frozen=True)
class ParamSetting:
    """A parameter's setting at one level: entries tried in order, first match wins."""

    entries: tuple[ConditionalValue, ...]
    key_path: str  # e.g. "models[2].parameters.density", used in error messages

    def resolve(self, tensor_name: str, t: float) -> Scalar | None:
        """Value for ``tensor_name`` at relative depth ``t`` in [0, 1]; None if no entry matches."""
        for entry in self.entries:
            if filter_matches(entry.filter, tensor_name):
                return evaluate_value(entry.value, t)
        return None


Parameters = dict[str, ParamSetting]


@dataclass(frozen=True)
class ModelInput:
    """One model as named in a recipe (``models:`` entry or a slice ``sources:`` entry)."""

    model: str
    parameters: Parameters = field(default_factory=dict)
    layer_range: tuple[int, int] | None = None  # [start, end), slices only
    key_path: str = ""
    statistics: Path | None = None
    """A statistics file of this model (Gram matrices, Fisher diagonals; docs/engine.md), as
    written in the recipe: relative paths are relative to the recipe's directory."""
    data: Path | None = None
    """Calibration data from which this model's statistics are computed, as written."""

    @property
    def layer_count(self) -> int | None:
        """Layers in ``layer_range``; ``None`` for a ``models:`` entry (the whole model)."""
        if self.layer_range is None:
            return None
        return self.layer_range[1] - self.layer_range[0]


@dataclass(frozen=True)
class SliceSpec:
    """One output slice: the same layer span taken from each source and merged."""

    sources: tuple[ModelInput, ...]
    parameters: Parameters = field(default_factory=dict)
    key_path: str = ""
    base_model: str | None = None  # mergekit's per-slice override of the recipe's base_model

    @property
    def num_layers(self) -> int:
        """Layers this slice contributes (every source spans the same count)."""
        return self.sources[0].layer_count or 0


@dataclass(frozen=True)
class TokenSource:
    """Where one output token's embedding row comes from (a ``tokenizer.tokens`` entry).

    ``kind``: ``model`` (``model``'s row for this token), ``zero``, ``model_token`` (``model``'s
    row for ``token`` or for row ``token_id``), or ``auto`` (the rule for tokens without an
    entry: see :mod:`alloykit.vocab.rows`). ``force`` gives every model this row, even the
    models that have the token.
    """

    kind: Literal["model", "zero", "model_token", "auto"]
    model: str | None = None
    token: str | None = None
    token_id: int | None = None
    force: bool = False


@dataclass(frozen=True)
class TokenizerSettings:
    """The output tokenizer: ``union``, ``base`` or a model reference, plus mergekit's
    per-token embedding sources and padding of the vocabulary rows."""

    source: str
    tokens: dict[str, TokenSource] = field(default_factory=dict)
    pad_to_multiple_of: int | None = None


@dataclass(frozen=True)
class ModuleSpec:
    """One entry of a ``modules:`` recipe: how one module of the model is merged.

    ``recipe`` is that module's merge as a recipe of its own (its ``models:`` or ``slices:``,
    its method, the recipe's base model); its parameters put the module's ``parameters:``
    before the recipe's top-level ones, entry by entry, so a module value wins and a filter
    that matches nothing falls through to the top level (mergekit's ``ConfigReader``).
    """

    name: str
    recipe: Recipe
    key_path: str


@dataclass(frozen=True)
class Recipe:
    """A validated merge recipe: ``models:``, ``slices:``, or ``modules:`` (one sub-recipe per
    module of a multimodal model; then ``models`` and ``slices`` are None)."""

    merge_method: str
    base_model: str | None
    models: tuple[ModelInput, ...] | None
    slices: tuple[SliceSpec, ...] | None
    parameters: Parameters
    dtype: str | None = None
    out_dtype: str | None = None
    tokenizer: TokenizerSettings | None = None
    chat_template: str | None = None
    vocab_mismatch: Literal["error", "common_rows"] = "error"
    seed: int | None = None
    source_file: Path | None = None
    raw: dict[str, Any] = field(default_factory=dict)  # the YAML as given, for the model card
    warnings: tuple[str, ...] = ()  # accepted as mergekit does, worth telling the user
    modules: tuple[ModuleSpec, ...] | None = None

    @property
    def tokenizer_source(self) -> str | None:
        """``union``, ``base``, a model reference, or None (the reference model's files)."""
        return self.tokenizer.source if self.tokenizer is not None else None

    def base_model_for(self, slice_index: int | None) -> str | None:
        """The base model of one slice (its own ``base_model`` if set), or of the recipe."""
        if slice_index is not None and self.slices is not None:
            override = self.slices[slice_index].base_model
            if override is not None:
                return override
        return self.base_model

    def resolve_path(self, path: Path) -> Path:
        """``path`` as written in the recipe, relative to the recipe's directory."""
        if path.is_absolute() or self.source_file is None:
            return path
        return self.source_file.parent / path

    def model_references(self) -> list[str]:
        """Every distinct model reference, base first, in order of appearance."""
        seen: list[str] = []
        if self.base_model:
            seen.append(self.base_model)
        inputs = list(self.models or ())
        for piece in self.slices or ():
            inputs.extend(piece.sources)
        for item in inputs:
            if item.model not in seen:
                seen.append(item.model)
        for module in self.modules or ():
            seen.extend(m for m in module.recipe.model_references() if m not in seen)
        return seen
