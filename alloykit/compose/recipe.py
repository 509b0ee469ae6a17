"""MoE recipes: mergekit-moe's YAML, plus upcycling and shared-tensor merges → :class:`MoERecipe`.

mergekit-moe's keys are read unchanged (``base_model``, ``experts`` with ``source_model``,
``positive_prompts``, ``negative_prompts``, ``noise_scale``, ``residual_scale``; ``gate_mode``,
``experts_per_token``, ``shared_experts``, ``dtype``, ``architecture``). alloykit adds
``num_experts`` / ``num_shared_experts`` (upcycling: copies of ``base_model``), ``reinit_ratio``
(Drop-Upcycling), ``shared_tensors`` (merge the non-expert tensors with a catalog method),
``out_dtype`` and ``seed``. Unknown keys are errors, as in merge recipes.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NoReturn

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from alloykit.errors import PlanError, RecipeError
from alloykit.methods import BasePolicy, get_method
from alloykit.recipe import Recipe, load_recipe
from alloykit.recipe.document import RecipeDocument, build_located, fail, read_document
from alloykit.recipe.reference import parse_reference
from alloykit.recipe.schema import format_loc, schema_in

GateMode = Literal[
    "hidden",
    "hidden_avg",
    "hidden_last",
    "hidden_expert",
    "cheap_embed",
    "random",
    "uniform_random",
]
PROMPTED_MODES = ("hidden", "hidden_avg", "hidden_last", "hidden_expert", "cheap_embed")


class _Schema(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ExpertSchema(_Schema):
    source_model: Any
    positive_prompts: list[str] | None = None
    negative_prompts: list[str] | None = None
    noise_scale: float | None = None
    residual_scale: float | None = None
    reinit_ratio: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _bare_reference(cls, value: Any) -> Any:
        return {"source_model": value} if isinstance(value, str) else value


class SharedTensorsSchema(_Schema):
    merge_method: str
    parameters: dict[str, Any] | None = None


class MoERecipeSchema(_Schema):
    base_model: Any
    experts: list[ExpertSchema] | None = None
    num_experts: int | None = None
    shared_experts: list[ExpertSchema] | None = None
    num_shared_experts: int | None = None
    gate_mode: GateMode | None = None
    experts_per_token: int = 2
    architecture: str | None = None
    dtype: str | None = None
    out_dtype: str | None = None
    reinit_ratio: float = 0.0
    shared_tensors: SharedTensorsSchema | None = None
    seed: int | None = None


@dataclass(frozen=True)
class ExpertSpec:
    """One expert (routed or shared): a dense model's MLP, optionally scaled, noised, re-drawn."""

    model: str
    key_path: str
    positive_prompts: tuple[str, ...] = ()
    negative_prompts: tuple[str, ...] = ()
    noise_scale: float = 0.0
    residual_scale: float | None = None  # None: 1, or the upcycling default for shared formats
    reinit_ratio: float = 0.0

    @property
    def has_prompts(self) -> bool:
        return bool(self.positive_prompts or self.negative_prompts)


@dataclass(frozen=True)
class MoERecipe:
    """A validated MoE recipe.

    ``dense`` is the merge recipe that makes every tensor outside the experts and routers:
    ``passthrough`` of the base model, or the ``shared_tensors`` method over the experts (with
    the base model as its base when the method uses one).
    For upcycling (``num_experts``), ``experts`` are copies of the base model and
    ``num_shared_experts`` (None: what the output format needs) copies are shared experts.
    """

    base_model: str
    experts: tuple[ExpertSpec, ...]
    shared_experts: tuple[ExpertSpec, ...]
    gate_mode: GateMode
    experts_per_token: int
    architecture: str | None
    dense: Recipe
    seed: int
    upcycled: bool
    num_shared_experts: int | None
    document: RecipeDocument

    @property
    def raw(self) -> dict[str, Any]:
        return self.document.data

    @property
    def search_dirs(self) -> tuple[Path, ...]:
        source = self.document.source_file
        return (source.parent,) if source is not None else ()

    def error(self, key_path: str, message: str, hint: str | None = None) -> PlanError:
        """A plan-time error about ``key_path``, located in the recipe file when there is one."""
        where = self.document.locate(key_path) or (
            self.document.label if self.document.source_file is not None else None
        )
        text = f"{key_path}: {message}" if key_path else message
        return PlanError(f"{where}: {text}" if where else text, hint)


def load_moe_recipe(source: str | Path | dict[str, Any], *, seed: int | None = None) -> MoERecipe:
    """Read and validate an MoE recipe (YAML path, YAML text or a dict); RecipeError if bad."""
    document = read_document(source)
    return build_located(document, lambda: _build(document, seed))


def _build(document: RecipeDocument, seed: int | None) -> MoERecipe:
    schema = _parse_schema(document.data)
    base = parse_reference(schema.base_model, "base_model")
    upcycled = schema.num_experts is not None
    if upcycled == (schema.experts is not None):
        fail(
            "experts",
            "give either experts: (dense models to combine) or num_experts: (upcycling)",
            "experts: [{source_model: ..., positive_prompts: [...]}, ...] or num_experts: 8",
        )
    _check_ratio(schema.reinit_ratio, "reinit_ratio")
    if upcycled:
        experts, shared = _upcycled(schema, base)
        gate_mode = schema.gate_mode or "random"
    else:
        if schema.num_shared_experts is not None:
            fail("num_shared_experts", "is for upcycling (num_experts:)", "list shared_experts:")
        experts = tuple(
            _expert(e, f"experts[{i}]", schema.reinit_ratio)
            for i, e in enumerate(schema.experts or ())
        )
        shared = tuple(
            _expert(e, f"shared_experts[{i}]", schema.reinit_ratio)
            for i, e in enumerate(schema.shared_experts or ())
        )
        gate_mode = schema.gate_mode or "hidden"
    if not experts:
        fail("experts", "an MoE needs at least one expert", "list the expert models")
    if schema.experts_per_token < 1:
        fail("experts_per_token", f"expected at least 1, got {schema.experts_per_token}")
    if schema.experts_per_token > len(experts):
        fail(
            "experts_per_token",
            f"{schema.experts_per_token} is more than the number of experts ({len(experts)})",
            "each token is routed to this many experts; lower it or add experts",
        )
    if gate_mode in PROMPTED_MODES:
        _check_prompts(experts, gate_mode, upcycled)
    if gate_mode.startswith("hidden") and "+" in base:
        fail(
            "base_model",
            f"gate_mode {gate_mode} runs the base model itself, which cannot carry a LoRA adapter",
            "bake the adapter in first (alloykit lora apply), or use gate_mode: cheap_embed",
        )
    the_seed = seed if seed is not None else (schema.seed or 0)
    return MoERecipe(
        base_model=base,
        experts=experts,
        shared_experts=shared,
        gate_mode=gate_mode,
        experts_per_token=schema.experts_per_token,
        architecture=schema.architecture,
        dense=_dense_recipe(schema, document, base, experts, the_seed),
        seed=the_seed,
        upcycled=upcycled,
        num_shared_experts=schema.num_shared_experts,
        document=document,
    )


def _upcycled(
    schema: MoERecipeSchema, base: str
) -> tuple[tuple[ExpertSpec, ...], tuple[ExpertSpec, ...]]:
    if schema.shared_experts is not None:
        fail(
            "shared_experts",
            "upcycling (num_experts:) makes its shared experts from the base model",
            "use num_shared_experts: N",
        )
    count = schema.num_experts or 0
    if count < 1:
        fail("num_experts", f"expected at least 1, got {count}", "e.g. num_experts: 8")
    shared_count = schema.num_shared_experts or 0
    if shared_count < 0:
        fail("num_shared_experts", f"expected 0 or more, got {shared_count}")
    ratio = schema.reinit_ratio
    experts = tuple(ExpertSpec(base, "num_experts", reinit_ratio=ratio) for _ in range(count))
    shared = tuple(ExpertSpec(base, "num_shared_experts") for _ in range(shared_count))
    return experts, shared


def _expert(entry: ExpertSchema, path: str, default_ratio: float) -> ExpertSpec:
    if entry.noise_scale is not None and entry.noise_scale < 0:
        fail(f"{path}.noise_scale", f"expected 0 or more, got {entry.noise_scale:g}")
    ratio = entry.reinit_ratio if entry.reinit_ratio is not None else default_ratio
    _check_ratio(ratio, f"{path}.reinit_ratio")
    return ExpertSpec(
        model=parse_reference(entry.source_model, f"{path}.source_model"),
        key_path=path,
        positive_prompts=tuple(entry.positive_prompts or ()),
        negative_prompts=tuple(entry.negative_prompts or ()),
        noise_scale=entry.noise_scale or 0.0,
        residual_scale=entry.residual_scale,
        reinit_ratio=ratio,
    )


def _check_ratio(value: float, path: str) -> None:
    if not 0.0 <= value <= 1.0:
        fail(
            path,
            f"expected a number in [0, 1], got {value:g}",
            "the share of each expert's "
            "intermediate neurons to re-initialise (Drop-Upcycling uses 0.5)",
        )


def _check_prompts(experts: tuple[ExpertSpec, ...], gate_mode: str, upcycled: bool) -> None:
    if upcycled:
        fail(
            "gate_mode",
            f"{gate_mode} gates are computed from each expert's prompts, and upcycled experts "
            "have none",
            "use gate_mode: random (the default with num_experts:), or list experts: with prompts",
        )
    for expert in experts:
        if not expert.positive_prompts:
            fail(
                f"{expert.key_path}.positive_prompts",
                f"gate_mode {gate_mode} needs positive prompts for every expert",
                "add positive_prompts: [a few prompts this expert should handle], or use "
                "gate_mode: random",
            )


def _dense_recipe(
    schema: MoERecipeSchema,
    document: RecipeDocument,
    base: str,
    experts: tuple[ExpertSpec, ...],
    seed: int,
) -> Recipe:
    """The merge recipe for everything outside the MoE blocks, validated by the merge spine."""
    data: dict[str, Any] = {"dtype": schema.dtype, "out_dtype": schema.out_dtype, "seed": seed}
    shared = schema.shared_tensors
    if shared is None:
        data.update(merge_method="passthrough", models=[base])
    else:
        models = list(dict.fromkeys(e.model for e in experts))
        data.update(merge_method=shared.merge_method, models=models, parameters=shared.parameters)
        if _uses_base(shared.merge_method):  # else the merge spine would merge it as a model
            data["base_model"] = base
    data = {k: v for k, v in data.items() if v is not None}
    try:
        recipe = load_recipe(data)
    except RecipeError as error:
        inner = getattr(error, "key_path", "")
        message = error.message.removeprefix(f"{inner}: ") if inner else error.message
        outer = "shared_tensors" if inner.startswith("models") else f"shared_tensors.{inner}"
        if inner in ("dtype", "out_dtype", "seed"):
            outer = inner
        fail(outer if inner else "shared_tensors", message, error.hint)
    return dataclasses.replace(recipe, source_file=document.source_file, raw=document.data)


def _uses_base(method: str) -> bool:
    try:
        return get_method(method).base is not BasePolicy.UNUSED
    except KeyError:
        return True  # load_recipe names the unknown method


# -- schema errors ---------------------------------------------------------------------------


def _parse_schema(data: dict[str, Any]) -> MoERecipeSchema:
    try:
        return MoERecipeSchema.model_validate(data)
    except ValidationError as error:
        _raise_first(error)


def _raise_first(error: ValidationError) -> NoReturn:
    first = error.errors()[0]
    loc = tuple(first["loc"])
    path = format_loc(loc)
    if first["type"] == "extra_forbidden":
        allowed = _keys_at(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        suggestion = f"did you mean '{close[0]}'? " if close else ""
        fail(path, "unknown key", f"{suggestion}allowed here: {', '.join(allowed)}")
    if first["type"] == "missing":
        fail(path, "required key is missing", "see docs/moe.md for the format")
    message = first["msg"][0].lower() + first["msg"][1:]
    fail(path, f"{message}, got {first.get('input')!r}", "see docs/moe.md for the format")


def _keys_at(loc: tuple[str | int, ...]) -> list[str]:
    schema: type[BaseModel] | None = MoERecipeSchema
    for part in loc:
        if schema is not None and isinstance(part, str) and part in schema.model_fields:
            schema = schema_in(schema.model_fields[part].annotation)
    return list(schema.model_fields) if schema is not None else []
