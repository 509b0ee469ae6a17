"""Recipe + opened sources → Plan: which inputs, method and parameters make each output tensor.

Layer structure comes from tensor names and config.json (see :mod:`alloykit.arch`); parameters
are resolved per tensor with mergekit's precedence, filters and gradients
(see :mod:`alloykit.recipe.resolve`).
"""

from __future__ import annotations

import copy
import difflib
from dataclasses import replace
from typing import Any

from alloykit.arch.layers import (
    LayerName,
    Section,
    config_holders,
    count_layers,
    in_tower,
    layer_config_keys,
    parse_layer_name,
    section_of,
    set_layer_count,
    sort_key,
    stack_layer,
    tied_embeddings,
)
from alloykit.arch.modules import (
    ModelModule,
    ModuleLayout,
    module_layout,
    set_module_layer_count,
)
from alloykit.arch.vocab import is_vocab_tensor, set_config_vocab_size
from alloykit.checkpoint.chat_templates import resolve_chat_template
from alloykit.checkpoint.derived import DerivedSource
from alloykit.checkpoint.source import ModelSource, locate, open_source
from alloykit.checkpoint.statistics import StatisticsFile, open_statistics, statistic_key
from alloykit.dtypes import parse_dtype, widest_dtype
from alloykit.errors import PlanError
from alloykit.methods import BasePolicy, get_method
from alloykit.plan import (
    DroppedTensor,
    ParameterSite,
    Plan,
    PlanEntry,
    PlanOptions,
    TensorRef,
    config_dtype,
    tensor_seed,
)
from alloykit.recipe.model import ModelInput, Recipe
from alloykit.recipe.resolve import ParameterResolver
from alloykit.vocab.plan import VocabularyPlan, plan_vocabulary
from alloykit.vocab.source import add_vocab_tensor


def open_sources(recipe: Recipe, allow_pickle: bool) -> dict[str, ModelSource]:
    search = (recipe.source_file.parent,) if recipe.source_file else ()
    return {
        ref: open_source(ref, search_dirs=search, allow_pickle=allow_pickle)
        for ref in recipe.model_references()
    }


def make_plan(
    recipe: Recipe,
    options: PlanOptions | None = None,
    *,
    sources: dict[str, ModelSource] | None = None,
) -> Plan:
    """Open every model by headers and decide how each output tensor is made.

    ``sources``, the recipe's models already opened (by reference), are used instead of
    opening them again (:class:`alloykit.Merger` plans new parameters over resident inputs).
    """
    options = options or PlanOptions()
    if sources is None:
        sources = open_sources(recipe, options.allow_pickle)
    return _Planner(recipe, options, sources).build()


def reparameterised(plan: Plan, recipe: Recipe, options: PlanOptions) -> Plan | None:
    """``plan`` with the parameter values (and seed) of ``recipe``, when ``recipe`` differs
    from the recipe ``plan`` was made from in those alone: the same tensors from the same
    inputs, each with its parameters resolved again from its
    :class:`~alloykit.plan.ParameterSite`. ``None`` when the recipes differ in anything else
    (models, method, dtypes, layer ranges, ...): that recipe needs a plan of its own."""
    if recipe.modules or _structure(recipe) != _structure(plan.recipe):
        return None  # a modules: recipe is planned again (its sites are per module)
    method = get_method(recipe.merge_method)
    resolver = ParameterResolver(recipe, method)
    inputs = _model_inputs(recipe)
    seed = options.seed if options.seed is not None else (recipe.seed or 0)
    entries = []
    for entry in plan.entries:
        site = plan.parameter_sites.get(entry.name)
        if site is None:  # copied, not merged
            entries.append(entry)
            continue
        models = [(inputs[key_path], name) for key_path, name in site.models]
        per_model, global_values = resolver.entry_values(
            tensor_name=site.tensor, t=site.t, slice_index=site.slice_index, models=models
        )
        changed = copy.copy(entry)  # dataclasses.replace takes ten times as long
        changed.per_model, changed.globals = per_model, global_values
        changed.seed = tensor_seed(seed, entry.name) if method.random else 0
        entries.append(changed)
    return replace(plan, recipe=recipe, entries=entries, seed=seed)


def _structure(recipe: Recipe) -> Recipe:
    """``recipe`` without its parameter values and seed (and the text they came from)."""
    bare = tuple(replace(m, parameters={}) for m in recipe.models or ())
    pieces = tuple(
        replace(p, parameters={}, sources=tuple(replace(s, parameters={}) for s in p.sources))
        for p in recipe.slices or ()
    )
    return replace(
        recipe,
        parameters={},
        models=bare if recipe.models is not None else None,
        slices=pieces if recipe.slices is not None else None,
        seed=None,
        raw={},
        warnings=(),
    )


def _model_inputs(recipe: Recipe) -> dict[str, ModelInput]:
    """Every model entry of ``recipe`` by key path, and a base merged as one more model."""
    found = {m.key_path: m for m in recipe.models or ()}
    for piece in recipe.slices or ():
        found.update((s.key_path, s) for s in piece.sources)
    if recipe.base_model is not None:
        found[_BASE_KEY] = ModelInput(model=recipe.base_model, key_path=_BASE_KEY)
    return found


_BASE_KEY = "base_model"


class _Planner:
    def __init__(self, recipe: Recipe, options: PlanOptions, sources: dict[str, ModelSource]):
        self.recipe = recipe
        self.options = options
        self.sources = sources
        self.method = get_method(recipe.merge_method)
        # the merge being planned: the whole recipe, or one module's sub-recipe and tensors
        self.part = recipe
        self.module: ModelModule | None = None
        self.layout: ModuleLayout | None = None
        self.reference = recipe.base_model or recipe.model_references()[0]
        self.entries: list[PlanEntry] = []
        self.used: set[TensorRef] = set()
        self.dropped: list[DroppedTensor] = []
        self.warnings: list[str] = list(recipe.warnings)
        self.seed = options.seed if options.seed is not None else (recipe.seed or 0)
        self.vocab_mode = options.vocab_mismatch or recipe.vocab_mismatch
        self.compute_dtype = options.dtype
        out = recipe.out_dtype or recipe.dtype
        where = "out_dtype" if recipe.out_dtype else "dtype"
        self.out_dtype = options.out_dtype or (parse_dtype(out, where) if out else None)
        self.config = copy.deepcopy(sources[self.reference].config)
        self.derived: dict[str, DerivedSource] = {}
        self.vocabulary = self._plan_vocabulary()
        self.statistics = self._open_statistics()
        self.resolver = ParameterResolver(recipe, self.method)
        self.sites: dict[str, ParameterSite] = {}

    # -- top level -------------------------------------------------------------------------
    def build(self) -> Plan:
        description = None
        if self.recipe.modules:
            description = self._plan_modules()
        elif self.recipe.slices:
            self._plan_slices()
        else:
            self._plan_models()
        self._account_unused()
        self._update_dtype_in_config()
        if self.vocabulary is not None:
            set_config_vocab_size(self.config, self.vocabulary.rows)
            self.sources.update(self.derived)
            self.warnings.append(self.vocabulary.summary())
        tokenizer = self.recipe.tokenizer_source
        if tokenizer in ("base", "union"):
            tokenizer = self.recipe.base_model or self.reference
        return Plan(
            recipe=self.recipe,
            method=self.method,
            sources=self.sources,
            entries=self.entries,
            dropped=self.dropped,
            warnings=self.warnings,
            config=self.config,
            reference=self.reference,
            tokenizer_source=tokenizer or self.reference,
            compute_dtype=self.compute_dtype,
            seed=self.seed,
            vocabulary=self.vocabulary,
            chat_template=self._chat_template(),
            statistics=self.statistics,
            parameter_sites=self.sites,
            description=description,
        )

    def _plan_vocabulary(self) -> VocabularyPlan | None:
        """The output vocabulary when the recipe names a tokenizer (see :mod:`alloykit.vocab`)."""
        settings = self.recipe.tokenizer
        if settings is None:
            return None
        rows = {ref: _vocab_rows(source) for ref, source in self.sources.items()}
        models = [ref for ref, count in rows.items() if count is not None]
        if not models:
            return None
        base = self.recipe.base_model or self.reference
        named = base if settings.source in ("base", "union") else settings.source
        if named in self.sources:
            root = self.sources[named].root
        else:
            search = (self.recipe.source_file.parent,) if self.recipe.source_file else ()
            root = locate(named, search)
            root = root if root.is_dir() else root.parent
        return plan_vocabulary(
            settings,
            roots={m: self.sources[m].root for m in models},
            configs={m: self.sources[m].config for m in models},
            row_counts={m: rows[m] for m in models if rows[m] is not None},
            base=base if base in models else models[0],
            source_root=root,
            source_reference=named,
        )

    def _chat_template(self) -> str | None:
        value = self.recipe.chat_template
        if not value:
            return None
        search = (self.recipe.source_file.parent,) if self.recipe.source_file else ()
        roots = [self.sources[ref].root for ref in self.recipe.model_references()]
        text = resolve_chat_template(value, search, roots)
        if text is None:
            self.warnings.append(
                "chat_template: auto found no chat template in the input models; none written"
            )
        return text

    def _split_base(
        self, inputs: list[ModelInput], where: str, slice_index: int | None = None
    ) -> tuple[list[ModelInput], ModelInput | None]:
        """Separate the base model from the contributing models, per the method's policy."""
        base_ref = self.part.base_model_for(slice_index)
        policy = self.method.base
        if policy is BasePolicy.UNUSED and base_ref is not None and self._base_joins(inputs):
            # mergekit merges an unlisted base_model as one more model for such methods
            self.warnings.append(
                f"method {self.method.name!r} does not treat base_model specially: "
                f"{base_ref!r} is merged as one more model (as mergekit does)"
            )
            return [*inputs, ModelInput(model=base_ref, key_path=_BASE_KEY)], None
        if policy is BasePolicy.UNUSED or base_ref is None:
            if policy is BasePolicy.REQUIRED:
                raise PlanError(
                    f"{where}: method {self.method.name!r} needs a base_model",
                    "add base_model: <the model the others were fine-tuned from>",
                )
            return inputs, None
        base = next((m for m in inputs if m.model == base_ref), None)
        others = [m for m in inputs if m.model != base_ref]
        if base is None:
            if self.part.slices:
                raise PlanError(
                    f"{where}: base_model {base_ref!r} is not among this slice's sources",
                    "add the base model to every slice's sources with the same layer_range",
                )
            base = ModelInput(model=base_ref, key_path=_BASE_KEY)
        count = len(others)
        low, high = self.method.min_models, self.method.max_models
        if count < low or (high is not None and count > high):
            span = f"{low}" if high == low else f"{low}..{high if high is not None else 'n'}"
            raise PlanError(
                f"{where}: method {self.method.name!r} takes {span} models besides the base, "
                f"got {count}",
                "adjust the models listed in the recipe",
            )
        return others, base

    def _base_joins(self, inputs: list[ModelInput]) -> bool:
        """An unlisted base joins a ``models:`` merge when the method takes any number."""
        listed = any(m.model == self.part.base_model for m in inputs)
        return not self.part.slices and not listed and self.method.max_models is None

    # -- modules: form ---------------------------------------------------------------------
    def _plan_modules(self) -> str:
        """Plan each module's sub-recipe over that module's tensors; every module of the model
        must have an entry (mergekit leaves an unlisted module out of its output, which then
        does not load)."""
        assert self.recipe.modules is not None
        layout = module_layout(self.sources[self.reference].tensors)
        self.layout = layout
        for spec in self.recipe.modules:
            if layout.get(spec.name) is None:
                close = difflib.get_close_matches(spec.name, layout.names, n=1)
                suggestion = f"did you mean '{close[0]}'? " if close else ""
                raise PlanError(
                    f"{spec.key_path}: model {self.reference!r} has no module {spec.name!r}",
                    f"{suggestion}its modules: {', '.join(layout.names)}",
                )
        listed = {spec.name for spec in self.recipe.modules}
        missing = [name for name in layout.names if name not in listed]
        if missing:
            raise PlanError(
                f"modules: no entry for module {missing[0]!r} of model {self.reference!r}"
                + (f" (nor {', '.join(repr(m) for m in missing[1:])})" if missing[1:] else ""),
                f"add modules.{missing[0]}: with its models: (every tensor belongs to one "
                f"module: {', '.join(layout.names)})",
            )
        for spec in self.recipe.modules:
            self.part, self.module = spec.recipe, layout.get(spec.name)
            self.method = get_method(spec.recipe.merge_method)
            self.resolver = ParameterResolver(spec.recipe, self.method)
            if self.method.statistics:
                raise PlanError(
                    f"{spec.key_path}.merge_method: method {self.method.name!r} takes "
                    "statistics, which modules: recipes do not provide",
                    "merge this model with models: and statistics: files instead",
                )
            if spec.recipe.slices:
                self._plan_slices()
            else:
                self._plan_models()
        self.part, self.module = self.recipe, None
        self.method = get_method(self.recipe.merge_method)
        self.resolver = ParameterResolver(self.recipe, self.method)
        return "modules: " + ", ".join(
            f"{spec.name} ({spec.recipe.merge_method})" for spec in self.recipe.modules
        )

    def _in_part(self, name: str) -> bool:
        """Whether tensor ``name`` belongs to the module being planned (any, outside one)."""
        return self.module is None or self._module_of(name) == self.module

    def _module_of(self, name: str) -> ModelModule | None:
        return self.layout.module_of(name) if self.layout is not None else None

    def _layer_of(self, name: str) -> LayerName | None:
        """The block ``name`` belongs to in the stack being sliced: the language stack of a
        whole model (towers are not sliced), or the module's own stack."""
        if self.module is None:
            return stack_layer(name)
        return parse_layer_name(name) if self._in_part(name) else None

    def _section(self, name: str) -> Section:
        """Where a tensor goes in a slice recipe: outside a module, a multimodal tower is
        taken whole with the embeddings (slices select language blocks). In a tower module,
        what lies outside its blocks comes before them (patch embeddings, ``ln_pre``) unless
        its name says ``post`` (mergekit's module definitions)."""
        if self.module is None and in_tower(name):
            return Section.PRE
        if self.module is not None and self.module.prefixes and parse_layer_name(name) is None:
            return Section.POST if "post" in name.lower() else Section.PRE
        return section_of(name)

    # -- statistics inputs -----------------------------------------------------------------
    def _open_statistics(self) -> dict[str, StatisticsFile]:
        """Each listed model's statistics file, when the method takes statistics (and every
        model's file holds every statistic it declares)."""
        declared = self.method.statistics
        if not declared or self.recipe.modules:
            return {}
        names = ", ".join(s.name for s in declared)
        if self.recipe.models is None:
            raise PlanError(
                f"slices: method {self.method.name!r} takes statistics ({names}), which are "
                "given per model",
                "use models: with a statistics: file on each model",
            )
        opened: dict[str, StatisticsFile] = {}
        for entry in self.recipe.models:
            if entry.model in opened:
                continue
            path = self.options.statistics.get(entry.model) or entry.statistics
            if path is None:
                where = f"{entry.key_path}.data" if entry.data is not None else entry.key_path
                raise PlanError(
                    f"{where}: method {self.method.name!r} needs statistics ({names}) of model "
                    f"{entry.model!r}, and none were given or computed",
                    f"add statistics: FILE to {entry.key_path} (see `alloykit calibrate`)",
                )
            where = f"{entry.key_path}.statistics"
            path = self.recipe.resolve_path(path)
            found = open_statistics(path, self.sources[entry.model], where)
            for statistic in declared:
                if statistic.name not in found.kinds():
                    raise PlanError(
                        f"{where}: {found.path} holds no {statistic.name!r} statistics "
                        f"(keys {statistic.name}:TENSOR), which method {self.method.name!r} needs",
                        "compute them with `alloykit calibrate`",
                    )
            opened[entry.model] = found
        return opened

    def _statistics_of(
        self, out_name: str, refs: list[TensorRef], *, rows_differ: bool
    ) -> dict[str, tuple[TensorRef | None, ...]]:
        """Each declared statistic of the models' tensors ``refs``: all of them, or none.
        ``rows_differ``: the models' rows of this tensor are not the output's (vocabularies
        differ), so no statistic of theirs applies."""
        mapped: dict[str, tuple[TensorRef | None, ...]] = {}
        for statistic in self.method.statistics:
            found: list[TensorRef | None] = []
            for ref in refs:
                if ref.model not in self.statistics:
                    raise PlanError(
                        f"tensor {out_name!r}: model {ref.model!r} has no statistics file, and "
                        f"method {self.method.name!r} needs its {statistic.name!r} statistics",
                        "list the model under models: with statistics: FILE",
                    )
                key = statistic_key(statistic.name, ref.name)
                stats = self.statistics[ref.model]
                entry = stats.entries.get(key)
                if entry is not None:
                    shape = self.sources[ref.model].tensors[ref.name].shape
                    expected = statistic.shape.of(shape)
                    if entry.shape != expected:
                        want = "none" if expected is None else str(list(expected))
                        raise PlanError(
                            f"statistics file {stats.path}: {key!r} has shape "
                            f"{list(entry.shape)}, expected {want} for tensor {ref.name!r} "
                            f"of shape {list(shape)}",
                            "the file was computed on another architecture; recompute it",
                        )
                found.append(None if entry is None else TensorRef(ref.model, key))
            present = [ref for ref in found if ref is not None]
            if present and len(present) < len(found):
                missing = refs[found.index(None)]
                have = present[0].model
                raise PlanError(
                    f"tensor {out_name!r}: statistics file {self.statistics[missing.model].path} "
                    f"of model {missing.model!r} has no "
                    f"{statistic_key(statistic.name, missing.name)!r}, which model {have!r}'s has",
                    "compute every model's statistics with the same settings and data",
                )
            if present and rows_differ:
                raise PlanError(
                    f"tensor {out_name!r}: the models' vocabularies differ and method "
                    f"{self.method.name!r} takes {statistic.name!r} statistics of it",
                    "merge models with the same vocabulary",
                )
            mapped[statistic.name] = tuple(found)
        return mapped

    # -- models: form ----------------------------------------------------------------------
    def _plan_models(self) -> None:
        assert self.part.models is not None
        where = f"{self._module_path()}models"
        inputs, base = self._split_base(list(self.part.models), where)
        reference = self.sources[self.reference]
        names = sorted((n for n in reference.tensors if self._in_part(n)), key=sort_key)
        if self.module is None:
            num_layers = count_layers(reference.config, names)
        else:
            num_layers = 1 + max(
                (layer.index for n in names if (layer := parse_layer_name(n))), default=-1
            )
        everyone = [*inputs, *([base] if base else [])]
        for model_input in everyone:
            self._check_same_tensors(model_input.model, names)
        for name in names:
            t = _depth(name, num_layers)
            self._add_entry(name, [(m, name) for m in inputs], (base, name) if base else None, t)

    def _module_path(self) -> str:
        """``modules.NAME.`` while a module is planned: the key path of its recipe keys."""
        return f"modules.{self.module.name}." if self.module is not None else ""

    def _check_same_tensors(self, model: str, names: list[str]) -> None:
        if model == self.reference:
            return
        have = set(self.sources[model].tensors)
        missing = [n for n in names if n not in have and self._tied_partner(model, n) is None]
        if missing:
            raise PlanError(
                f"tensor {missing[0]!r} is missing from model {model!r}"
                + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""),
                f"models must share the architecture of {self.reference!r}; use slices to "
                "combine different depths",
            )

    def _tied_partner(self, model: str, name: str) -> str | None:
        """For a model that ties its output head to the embeddings, the tensor standing in."""
        source = self.sources[model]
        if name in source.tensors or "lm_head" not in name or not tied_embeddings(source.config):
            return None
        candidates = [n for n in source.tensors if section_of(n) is Section.PRE and "embed" in n]
        candidates += [n for n in source.tensors if n.endswith("wte.weight")]
        return candidates[0] if candidates else None

    # -- slices: form ----------------------------------------------------------------------
    def _plan_slices(self) -> None:
        assert self.part.slices is not None
        slices = self.part.slices
        prefix = self._module_path()
        layer_map: list[tuple[str, int]] = []  # output layer -> (model, source layer)
        first_inputs, first_base = self._split_base(
            list(slices[0].sources), f"{prefix}slices[0]", 0
        )
        last_inputs, last_base = self._split_base(
            list(slices[-1].sources), f"{prefix}slices[{len(slices) - 1}]", len(slices) - 1
        )
        self._plan_outer(Section.PRE, first_inputs, first_base, slice_index=0)
        out_layer = 0
        for index, piece in enumerate(slices):
            where = f"{prefix}slices[{index}]"
            inputs, base = self._split_base(list(piece.sources), where, index)
            lengths = {
                src.layer_range[1] - src.layer_range[0] for src in piece.sources if src.layer_range
            }
            if len(lengths) != 1 or any(src.layer_range is None for src in piece.sources):
                raise PlanError(
                    f"{where}: every source needs a layer_range, all of the same length",
                    "e.g. layer_range: [0, 16] on each source",
                )
            length = lengths.pop()
            for offset in range(length):
                t = offset / (length - 1) if length > 1 else 1.0
                self._plan_layer(piece.sources[0], inputs, base, offset, out_layer, t, index)
                layer_map.append((piece.sources[0].model, piece.sources[0].layer_range[0] + offset))  # type: ignore[index]
                out_layer += 1
        self._plan_outer(Section.POST, last_inputs, last_base, slice_index=len(slices) - 1)
        self._renumber_config(layer_map)

    def _plan_outer(
        self, section: Section, inputs: list[ModelInput], base: ModelInput | None, slice_index: int
    ) -> None:
        lead = (base or inputs[0]).model
        for name in sorted(self.sources[lead].tensors, key=sort_key):
            if self._in_part(name) and self._section(name) is section:
                self._add_entry(
                    name,
                    [(m, name) for m in inputs],
                    (base, name) if base else None,
                    0.0,
                    slice_index,
                )

    def _plan_layer(
        self,
        lead: ModelInput,
        inputs: list[ModelInput],
        base: ModelInput | None,
        offset: int,
        out_layer: int,
        t: float,
        slice_index: int,
    ) -> None:
        assert lead.layer_range is not None
        lead_layer = lead.layer_range[0] + offset
        lead_names = [
            n
            for n in sorted(self.sources[lead.model].tensors, key=sort_key)
            if (p := self._layer_of(n)) is not None and p.index == lead_layer
        ]
        if not lead_names:
            raise PlanError(
                f"{lead.key_path or 'slice'}: model {lead.model!r} has no layer {lead_layer}",
                f"its layers are 0..{self._layer_count(lead.model) - 1}",
            )

        def source_name(model_input: ModelInput, name: str) -> str:
            assert model_input.layer_range is not None
            parsed = parse_layer_name(name)
            assert parsed is not None
            return parsed.with_index(model_input.layer_range[0] + offset)

        for name in lead_names:
            parsed = parse_layer_name(name)
            assert parsed is not None
            out_name = parsed.with_index(out_layer)
            refs = [(m, source_name(m, name)) for m in inputs]
            base_ref = (base, source_name(base, name)) if base else None
            for model_input, input_name in [*refs, *([base_ref] if base_ref else [])]:
                if input_name not in self.sources[model_input.model].tensors:
                    raise PlanError(
                        f"tensor {input_name!r} is missing from model {model_input.model!r}",
                        "all sources of a slice must share the architecture",
                    )
            self._add_entry(out_name, refs, base_ref, t, slice_index)

    def _renumber_config(self, layer_map: list[tuple[str, int]]) -> None:
        """Per-layer lists (``layer_types``, ...) follow the slices, at the top level and in a
        nested ``text_config``; every layer count the config keeps becomes the new depth.
        A tower module's slices renumber its own config (``vision_config``) instead."""
        key = self.module.config_key if self.module is not None else None
        if key is not None:
            self._renumber_module_config(key, layer_map)
            return
        reference_layers = count_layers(self.config, self.sources[self.reference].tensors)
        theirs = {model: config_holders(src.config) for model, src in self.sources.items()}
        for index, holder in enumerate(config_holders(self.config)):
            for key in layer_config_keys(holder, reference_layers):
                values = []
                for model, layer in layer_map:
                    own = theirs[model][index].get(key) if index < len(theirs[model]) else None
                    values.append(
                        own[layer]
                        if isinstance(own, list) and layer < len(own)
                        else holder[key][min(layer, reference_layers - 1)]
                    )
                holder[key] = values
        set_layer_count(self.config, len(layer_map))

    def _renumber_module_config(self, key: str, layer_map: list[tuple[str, int]]) -> None:
        holder = self.config.get(key)
        before = 1 + max(
            (p.index for n in self.sources[self.reference].tensors if (p := self._layer_of(n))),
            default=-1,
        )
        if not isinstance(holder, dict) or not set_module_layer_count(holder, len(layer_map)):
            raise PlanError(
                f"{self._module_path()}slices: config.json of {self.reference!r} keeps no layer "
                f"count in {key}, so the sliced module would not load",
                "merge this module with models: (whole) instead of slices:",
            )
        for name in layer_config_keys(holder, before):
            holder[name] = [holder[name][layer] for _, layer in layer_map]

    def _layer_count(self, model: str) -> int:
        source = self.sources[model]
        return count_layers(source.config, source.tensors)

    # -- one output tensor -----------------------------------------------------------------
    def _add_entry(
        self,
        out_name: str,
        inputs: list[tuple[ModelInput, str]],
        base: tuple[ModelInput, str] | None,
        t: float,
        slice_index: int | None = None,
    ) -> None:
        refs = [TensorRef(m.model, self._resolve_name(m.model, n)) for m, n in inputs]
        base_ref = (
            TensorRef(base[0].model, self._resolve_name(base[0].model, base[1])) if base else None
        )
        everyone = [*refs, *([base_ref] if base_ref else [])]
        as_read = refs  # the models' own tensors, to which their statistics belong
        if self._in_output_vocabulary(out_name, everyone):
            self.used.update(everyone)
            refs, base_ref = self._relaid(out_name, refs, base_ref, slice_index)
            everyone = [*refs, *([base_ref] if base_ref else [])]
        metas = [self._meta(r) for r in everyone]
        shape, common_rows = self._output_shape(out_name, everyone, metas, base_ref)
        lead_meta = self._meta(base_ref or refs[0])
        floating = lead_meta.dtype.is_floating_point
        if self.out_dtype and floating:
            out_dtype = self.out_dtype
        elif floating:
            out_dtype = widest_dtype([m.dtype for m in metas if m.dtype.is_floating_point])
        else:
            out_dtype = lead_meta.dtype
        self.used.update(everyone)
        if not floating:
            self.entries.append(
                PlanEntry(
                    out_name,
                    shape,
                    out_dtype,
                    "passthrough",
                    (base_ref or refs[0],),
                    None,
                    {"scale": (1.0,)},
                    {},
                )
            )
            self.warnings.append(
                f"{out_name}: non-float tensor copied from {(base_ref or refs[0]).model}"
            )
            return
        site = ParameterSite(out_name, t, slice_index, tuple((m.key_path, n) for m, n in inputs))
        per_model, global_values = self.resolver.entry_values(
            tensor_name=out_name, t=t, slice_index=slice_index, models=inputs
        )
        if not inputs:
            raise PlanError(f"{out_name}: no models to merge", "list at least one model")
        self.sites[out_name] = site
        self.entries.append(
            PlanEntry(
                name=out_name,
                shape=shape,
                dtype=out_dtype,
                method=self.method.name,
                inputs=tuple(refs),
                base=base_ref,
                per_model=per_model,
                globals=global_values,
                seed=tensor_seed(self.seed, out_name) if self.method.random else 0,
                common_rows=common_rows,
                statistics=self._statistics_of(
                    out_name, as_read, rows_differ=common_rows is not None or as_read != refs
                ),
            )
        )

    def _meta(self, ref: TensorRef) -> Any:
        source = self.derived.get(ref.model) or self.sources[ref.model]
        return source.tensors[ref.name]

    def _in_output_vocabulary(self, out_name: str, refs: list[TensorRef]) -> bool:
        """Whether the tensor has one row per token of the models' vocabularies."""
        if self.vocabulary is None:
            return False
        for ref in refs:
            meta = self.sources[ref.model].tensors[ref.name]
            count = self.vocabulary.row_counts.get(ref.model)
            if not is_vocab_tensor(out_name, meta.shape) or meta.shape[0] != count:
                return False
        return True

    def _relaid(
        self,
        out_name: str,
        refs: list[TensorRef],
        base_ref: TensorRef | None,
        slice_index: int | None,
    ) -> tuple[list[TensorRef], TensorRef | None]:
        """The inputs of ``out_name`` laid out in the output vocabulary (derived tensors)."""
        assert self.vocabulary is not None
        everyone = [*refs, *([base_ref] if base_ref else [])]
        models = list(dict.fromkeys(r.model for r in everyone))
        base = self.part.base_model_for(slice_index)
        layout = self.vocabulary.layout(models, base if base in models else None)
        inputs = {r.model: r.name for r in everyone}
        derived = add_vocab_tensor(self.derived, self.sources, out_name, inputs, layout)
        relaid = [TensorRef(derived[r.model], out_name) for r in refs]
        base_relaid = TensorRef(derived[base_ref.model], out_name) if base_ref else None
        return relaid, base_relaid

    def _resolve_name(self, model: str, name: str) -> str:
        if name in self.sources[model].tensors:
            return name
        partner = self._tied_partner(model, name)
        if partner is None:
            raise PlanError(
                f"tensor {name!r} is missing from model {model!r}",
                "all models must share the architecture",
            )
        return partner

    def _output_shape(
        self, out_name: str, refs: list[TensorRef], metas: list[Any], base: TensorRef | None
    ) -> tuple[tuple[int, ...], int | None]:
        shapes = [m.shape for m in metas]
        if all(s == shapes[0] for s in shapes):
            return shapes[0], None
        trailing_same = all(len(s) == len(shapes[0]) and s[1:] == shapes[0][1:] for s in shapes)
        is_vocab = (
            section_of(out_name) is Section.PRE or "lm_head" in out_name or "embed_out" in out_name
        )
        sizes = ", ".join(
            f"{r.model}: {s[0] if s else s}" for r, s in zip(refs, shapes, strict=True)
        )
        if trailing_same and is_vocab:
            if self.vocab_mode != "common_rows":
                raise PlanError(
                    f"tensor {out_name!r}: vocabulary sizes differ ({sizes} rows)",
                    "set vocab_mismatch: common_rows in the recipe (or --vocab-mismatch "
                    "common_rows) to merge the shared rows and take the rest from the base",
                )
            lead = base or refs[0]
            lead_shape = self.sources[lead.model].tensors[lead.name].shape
            rows = min(s[0] for s in shapes)
            self.warnings.append(
                f"{out_name}: vocabulary sizes differ ({sizes}); merging the first {rows} rows, "
                f"the rest from {lead.model}"
            )
            return lead_shape, rows
        detail = ", ".join(f"{r.model}: {list(s)}" for r, s in zip(refs, shapes, strict=True))
        raise PlanError(
            f"tensor {out_name!r}: shapes differ ({detail})",
            "models must share the architecture and sizes",
        )

    # -- bookkeeping -----------------------------------------------------------------------
    def _account_unused(self) -> None:
        unmapped: list[DroppedTensor] = []
        for ref, source in self.sources.items():
            for name in source.tensors:
                if TensorRef(ref, name) in self.used:
                    continue
                reason = self._drop_reason(ref, name)
                if reason is None:
                    unmapped.append(DroppedTensor(ref, name, f"not present in {self.reference!r}"))
                else:
                    self.dropped.append(DroppedTensor(ref, name, reason))
        if unmapped and not self.options.drop_unmapped:
            first = unmapped[0]
            raise PlanError(
                f"tensor {first.name!r} of model {first.model!r} has no place in the output"
                + (f" (and {len(unmapped) - 1} more)" if len(unmapped) > 1 else ""),
                "the models' architectures differ; pass --drop-unmapped to drop such tensors",
            )
        self.dropped.extend(unmapped)

    def _drop_reason(self, model: str, name: str) -> str | None:
        part, method, where = self.recipe, self.method, ""
        if self.layout is not None and self.recipe.modules is not None:
            module = self.layout.module_of(name)
            spec = next(s for s in self.recipe.modules if s.name == module.name)
            if model not in spec.recipe.model_references():
                return f"module {module.name!r} does not take model {model!r}"
            part, method = spec.recipe, get_method(spec.recipe.merge_method)
            where = f" of module {module.name!r}"
        if part.slices:
            layer = parse_layer_name(name)
            if layer is not None:
                return f"layer {layer.index}{where} is not selected by any slice"
            return "embeddings and head are taken from the first and last slices' models"
        if model == part.base_model and method.base is BasePolicy.UNUSED:
            return f"method {method.name!r} does not use the base model's weights"
        if "lm_head" in name and tied_embeddings(self.sources[self.reference].config):
            return f"{self.reference!r} ties the output head to the input embeddings"
        return None

    def _update_dtype_in_config(self) -> None:
        dtype = config_dtype(self.entries)
        if dtype is None:
            return
        name = dtype.name
        keys = [k for k in ("torch_dtype", "dtype") if k in self.config] or ["dtype"]
        for key in keys:
            self.config[key] = name
        text = self.config.get("text_config")
        if isinstance(text, dict):
            for key in ("torch_dtype", "dtype"):
                if key in text:
                    text[key] = name


def _vocab_rows(source: ModelSource) -> int | None:
    """Rows of the model's first vocabulary tensor (its input embeddings), if it has one."""
    for name in sorted(source.tensors, key=sort_key):
        meta = source.tensors[name]
        if is_vocab_tensor(name, meta.shape):
            return meta.shape[0]
    return None


def _depth(name: str, num_layers: int) -> float:
    """mergekit's relative depth: i/(L-1) in the blocks (1 for a single block), 0 outside."""
    layer = parse_layer_name(name)
    if layer is None:
        return 0.0
    return layer.index / (num_layers - 1) if num_layers > 1 else 1.0
