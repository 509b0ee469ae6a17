"""The recipe's shape as a pydantic schema: the only place raw YAML is validated.

Keys are checked here (unknown keys are errors, listing the keys allowed at that spot); model
references and parameter values are kept as given and normalised by ``load.py`` and
``parameters.py``, which know the merge method and can name the exact key path.
"""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any, Literal, NoReturn

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from alloykit.recipe.document import fail

# mergekit keys that are recognised only to be refused with a precise message.
UNSUPPORTED_KEYS = frozenset({"residual_weight"})


class _Schema(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelEntrySchema(_Schema):
    """A ``models:`` entry; a bare model reference is also accepted."""

    model: Any
    parameters: dict[str, Any] | None = None
    statistics: Any = None  # a statistics file (alloykit calibrate's output)
    data: Any = None  # calibration data: a zoo task dir, a task YAML or a JSONL

    @model_validator(mode="before")
    @classmethod
    def _bare_reference(cls, value: Any) -> Any:
        return {"model": value} if isinstance(value, str) else value


class SliceSourceSchema(_Schema):
    model: Any
    layer_range: tuple[int, int]
    parameters: dict[str, Any] | None = None


class SliceSchema(_Schema):
    sources: list[SliceSourceSchema]
    base_model: Any = None
    residual_weight: Any = None
    parameters: dict[str, Any] | None = None


class TokenizerSchema(_Schema):
    source: Any = "union"  # mergekit's default when a tokenizer: block is given
    tokens: Any = None
    pad_to_multiple_of: Any = None


class ModuleSchema(_Schema):
    """One ``modules:`` entry: mergekit's ``OutputModuleDefinition``, plus alloykit's own
    ``merge_method`` (a module merged with another method than the recipe's)."""

    models: list[ModelEntrySchema] | None = None
    slices: list[SliceSchema] | None = None
    parameters: dict[str, Any] | None = None
    merge_method: str | None = None


class RecipeSchema(_Schema):
    merge_method: str
    models: list[ModelEntrySchema] | None = None
    slices: list[SliceSchema] | None = None
    modules: dict[str, ModuleSchema] | None = None
    base_model: Any = None
    parameters: dict[str, Any] | None = None
    dtype: str | None = None
    out_dtype: str | None = None
    tokenizer_source: Any = None
    tokenizer: TokenizerSchema | None = None
    chat_template: str | None = None
    vocab_mismatch: Literal["error", "common_rows"] = "error"
    seed: int | None = None


def parse_schema(data: dict[str, Any]) -> RecipeSchema:
    """Validate the recipe's keys and simple values; errors name the key path."""
    try:
        return RecipeSchema.model_validate(data)
    except ValidationError as error:
        _raise_first(error)


def format_loc(loc: tuple[str | int, ...]) -> str:
    """pydantic's ``("models", 2, "parameters")`` → ``models[2].parameters``."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def _raise_first(error: ValidationError) -> NoReturn:
    first = error.errors()[0]
    loc = tuple(first["loc"])
    path = format_loc(loc)
    kind = first["type"]
    if kind == "extra_forbidden":
        allowed = _keys_at(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        suggestion = f"did you mean '{close[0]}'? " if close else ""
        fail(path, "unknown key", f"{suggestion}allowed here: {', '.join(allowed)}")
    if kind == "missing":
        fail(path, "required key is missing", "see docs/recipes.md for the format")
    message = first["msg"]
    message = message[0].lower() + message[1:]
    fail(path, f"{message}, got {first.get('input')!r}", "see docs/recipes.md for the format")


def _keys_at(loc: tuple[str | int, ...]) -> list[str]:
    """The keys allowed in the mapping found at ``loc``."""
    schema: type[BaseModel] | None = RecipeSchema
    for part in loc:
        if schema is None:
            break
        if isinstance(part, str) and part in schema.model_fields:
            schema = schema_in(schema.model_fields[part].annotation)
    if schema is None:
        return []
    return [name for name in schema.model_fields if name not in UNSUPPORTED_KEYS]


def schema_in(annotation: Any) -> type[BaseModel] | None:
    """The schema class inside ``list[X] | None`` and similar annotations."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (list, dict, typing.Union, types.UnionType):
        for argument in typing.get_args(annotation):
            found = schema_in(argument)
            if found is not None:
                return found
    return None
