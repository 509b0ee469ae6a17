"""``load_recipe``: YAML (alloykit's or mergekit's format) → a validated :class:`Recipe`."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from alloykit.methods import Method, get_method, method_names
from alloykit.recipe.document import RecipeDocument, build_located, fail, read_document
from alloykit.recipe.model import ModelInput, Recipe, SliceSpec
from alloykit.recipe.parameters import parse_parameters
from alloykit.recipe.reference import parse_reference
from alloykit.recipe.schema import ModelEntrySchema, SliceSchema, parse_schema
from alloykit.recipe.tokenizer import parse_tokenizer
from alloykit.recipe.validate import check_recipe


def load_recipe(
    source: str | Path | dict[str, Any],
    *,
    seed: int | None = None,
    source_file: Path | None = None,
) -> Recipe:
    """Read, validate and normalise a merge recipe.

    ``source`` is a path to a YAML file, YAML text, or an already parsed mapping. ``seed``
    overrides the recipe's own ``seed:``. Every problem (syntax, unknown keys, unknown method
    or parameter, out-of-range values, missing base model, ...) raises :class:`RecipeError`
    with a one-line message naming the file, line and key path, and a hint. ``source_file``
    names the file a mapping came from (one document of a multi-document recipe).
    """
    document = read_document(source, source_file)
    return build_located(document, lambda: _build(document, seed))


def _build(document: RecipeDocument, seed: int | None) -> Recipe:
    warnings: list[tuple[str, str]] = []
    schema = parse_schema(document.data)
    if schema.modules is not None:
        fail(
            "modules",
            "multi-module recipes (modules:) are not supported yet",
            "use models: or slices: for a single-module model",
        )
    method = _method(schema.merge_method)
    if schema.models and schema.slices:
        fail("slices", "give either models: or slices:, not both", "keep one of the two lists")
    if not schema.models and not schema.slices:
        fail(
            "models",
            "the recipe lists no models",
            "add models: (whole models to merge) or slices: (layer ranges of models)",
        )
    base_model = (
        parse_reference(schema.base_model, "base_model") if schema.base_model is not None else None
    )
    models = slices = None
    if schema.models:
        models = tuple(
            _model_input(entry, f"models[{i}]", method, warnings)
            for i, entry in enumerate(schema.models)
        )
    else:
        slices = tuple(
            _slice(piece, f"slices[{i}]", method, warnings)
            for i, piece in enumerate(schema.slices or ())
        )
    recipe = Recipe(
        merge_method=method.name,
        base_model=base_model,
        models=models,
        slices=slices,
        parameters=parse_parameters(schema.parameters, "parameters", method, "top", warnings),
        dtype=schema.dtype,
        out_dtype=schema.out_dtype,
        tokenizer=parse_tokenizer(schema, base_model),
        chat_template=schema.chat_template,
        vocab_mismatch=schema.vocab_mismatch,
        seed=seed if seed is not None else schema.seed,
        source_file=document.source_file,
        raw=document.data,
        warnings=tuple(_located(document, key_path, text) for key_path, text in warnings),
    )
    check_recipe(recipe, method)
    return recipe


def _located(document: RecipeDocument, key_path: str, text: str) -> str:
    where = document.locate(key_path)
    return f"{where}: {key_path}: {text}" if where else f"{key_path}: {text}"


def _method(name: str) -> Method:
    try:
        return get_method(name)
    except KeyError:
        names = method_names()
        close = difflib.get_close_matches(name, names, n=1)
        suggestion = f"did you mean '{close[0]}'? " if close else ""
        fail(
            "merge_method",
            f"unknown merge method '{name}'",
            f"{suggestion}valid methods: {', '.join(names)}",
        )


def _model_input(
    entry: ModelEntrySchema, path: str, method: Method, warnings: list[tuple[str, str]]
) -> ModelInput:
    return ModelInput(
        model=parse_reference(entry.model, f"{path}.model"),
        parameters=parse_parameters(
            entry.parameters, f"{path}.parameters", method, "model", warnings
        ),
        key_path=path,
        statistics=_file_path(entry.statistics, f"{path}.statistics"),
        data=_file_path(entry.data, f"{path}.data"),
    )


def _file_path(raw: Any, path: str) -> Path | None:
    """A path given in the recipe (kept as written; the planner resolves it)."""
    if raw is None:
        return None
    if not isinstance(raw, str) or not raw.strip():
        fail(path, f"expected a file path, got {raw!r}", "e.g. stats/model-a.safetensors")
    return Path(raw)


def _slice(
    piece: SliceSchema, path: str, method: Method, warnings: list[tuple[str, str]]
) -> SliceSpec:
    if piece.residual_weight is not None:
        fail(
            f"{path}.residual_weight",
            "is not supported (mergekit accepts it but never uses it)",
            "remove it",
        )
    if not piece.sources:
        fail(f"{path}.sources", "a slice needs at least one source", "list the models' layers")
    sources = []
    for i, source in enumerate(piece.sources):
        where = f"{path}.sources[{i}]"
        start, end = source.layer_range
        if start < 0 or end <= start:
            fail(
                f"{where}.layer_range",
                f"expected [start, end) with 0 <= start < end, got [{start}, {end}]",
                "e.g. layer_range: [0, 16] takes layers 0 to 15",
            )
        sources.append(
            ModelInput(
                model=parse_reference(source.model, f"{where}.model"),
                parameters=parse_parameters(
                    source.parameters, f"{where}.parameters", method, "model", warnings
                ),
                layer_range=(start, end),
                key_path=where,
            )
        )
    base_model = (
        parse_reference(piece.base_model, f"{path}.base_model")
        if piece.base_model is not None
        else None
    )
    return SliceSpec(
        sources=tuple(sources),
        parameters=parse_parameters(
            piece.parameters, f"{path}.parameters", method, "slice", warnings
        ),
        key_path=path,
        base_model=base_model,
    )
