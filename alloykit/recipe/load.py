"""``load_recipe``: YAML (alloykit's or mergekit's format) → a validated :class:`Recipe`."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from alloykit.methods import Method, get_method, method_names
from alloykit.recipe.document import RecipeDocument, build_located, fail, read_document
from alloykit.recipe.model import (
    ModelInput,
    ModuleSpec,
    Parameters,
    ParamSetting,
    Recipe,
    SliceSpec,
)
from alloykit.recipe.parameters import parse_parameters
from alloykit.recipe.reference import parse_reference
from alloykit.recipe.schema import (
    ModelEntrySchema,
    ModuleSchema,
    RecipeSchema,
    SliceSchema,
    parse_schema,
)
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
    method = _method(schema.merge_method)
    _check_one_form(schema)
    base_model = (
        parse_reference(schema.base_model, "base_model") if schema.base_model is not None else None
    )
    models = slices = modules = None
    if schema.modules:
        modules = tuple(
            _module(name, module, schema, method, base_model, warnings)
            for name, module in schema.modules.items()
        )
    elif schema.models:
        models = tuple(
            _model_input(entry, f"models[{i}]", method, warnings)
            for i, entry in enumerate(schema.models)
        )
    else:
        slices = tuple(
            _slice(piece, f"slices[{i}]", method, warnings)
            for i, piece in enumerate(schema.slices or ())
        )
    # a modules: recipe keeps its top-level parameters inside each module's sub-recipe
    top = {} if modules else schema.parameters
    recipe = Recipe(
        merge_method=method.name,
        base_model=base_model,
        models=models,
        slices=slices,
        parameters=parse_parameters(top, "parameters", method, "top", warnings),
        dtype=schema.dtype,
        out_dtype=schema.out_dtype,
        tokenizer=parse_tokenizer(schema, base_model),
        chat_template=schema.chat_template,
        vocab_mismatch=schema.vocab_mismatch,
        seed=seed if seed is not None else schema.seed,
        source_file=document.source_file,
        raw=document.data,
        warnings=tuple(
            dict.fromkeys(_located(document, key_path, text) for key_path, text in warnings)
        ),
        modules=modules,
    )
    check_recipe(recipe, method)
    return recipe


def _check_one_form(schema: RecipeSchema) -> None:
    """Exactly one of models:, slices: and modules:, as in mergekit."""
    given = [key for key in ("models", "slices", "modules") if getattr(schema, key)]
    if given == ["models", "slices"]:
        fail("slices", "give either models: or slices:, not both", "keep one of the two lists")
    if len(given) > 1:
        fail(given[-1], f"give one of {', '.join(given)}, not several", "keep one of them")
    if not given:
        fail(
            "models",
            "the recipe lists no models",
            "add models: (whole models to merge) or slices: (layer ranges of models)",
        )


def _module(
    name: str,
    module: ModuleSchema,
    schema: RecipeSchema,
    top_method: Method,
    base_model: str | None,
    warnings: list[tuple[str, str]],
) -> ModuleSpec:
    """One module's merge as a recipe of its own (see :class:`ModuleSpec`)."""
    path = f"modules.{name}"
    if bool(module.models) == bool(module.slices):
        fail(
            path,
            "a module needs either models: or slices: (one of the two)",
            "list the models to merge for this module, or its slices",
        )
    method = _method(module.merge_method, f"{path}.merge_method") if module.merge_method else None
    method = method or top_method
    models = slices = None
    if module.models:
        models = tuple(
            _model_input(entry, f"{path}.models[{i}]", method, warnings)
            for i, entry in enumerate(module.models)
        )
    else:
        slices = tuple(
            _slice(piece, f"{path}.slices[{i}]", method, warnings)
            for i, piece in enumerate(module.slices or ())
        )
    own = parse_parameters(module.parameters, f"{path}.parameters", method, "top", warnings)
    ignored: list[tuple[str, str]] = []
    shared = parse_parameters(schema.parameters, "parameters", method, "top", ignored)
    warnings.extend((key_path, f"{text} (module {name})") for key_path, text in ignored)
    recipe = Recipe(
        merge_method=method.name,
        base_model=base_model,
        models=models,
        slices=slices,
        parameters=_before(own, shared),
        dtype=schema.dtype,
        out_dtype=schema.out_dtype,
    )
    check_recipe(recipe, method, f"{path}.")
    return ModuleSpec(name, recipe, path)


def _before(first: Parameters, then: Parameters) -> Parameters:
    """Two levels of parameters as one: for each name, ``first``'s entries, then ``then``'s
    (an entry list is read in order, first match wins: mergekit's level fall-through)."""
    joined = dict(then)
    for name, setting in first.items():
        rest = then[name].entries if name in then else ()
        joined[name] = ParamSetting((*setting.entries, *rest), setting.key_path)
    return joined


def _located(document: RecipeDocument, key_path: str, text: str) -> str:
    where = document.locate(key_path)
    return f"{where}: {key_path}: {text}" if where else f"{key_path}: {text}"


def _method(name: str, key_path: str = "merge_method") -> Method:
    try:
        return get_method(name)
    except KeyError:
        names = method_names()
        close = difflib.get_close_matches(name, names, n=1)
        suggestion = f"did you mean '{close[0]}'? " if close else ""
        fail(
            key_path,
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
