"""The planner proper: a recipe's ``models:``, ``slices:`` or ``modules:`` form walked over the
opened sources, deciding each output tensor (inputs, method, parameters, shape, dtype) and
the output's config. What it asks of other modules: the output vocabulary
(:mod:`alloykit.planner.vocabulary`), the statistics inputs
(:mod:`alloykit.planner.statistics`) and the tensors left out
(:mod:`alloykit.planner.drops`)."""

from __future__ import annotations

import copy
import difflib
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
from alloykit.arch.vocab import set_config_vocab_size
from alloykit.checkpoint.chat_templates import resolve_chat_template
from alloykit.checkpoint.derived import DerivedSource
from alloykit.checkpoint.source import ModelSource
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
from alloykit.planner.drops import dropped_tensors
from alloykit.planner.statistics import open_statistics_files, statistics_of
from alloykit.planner.vocabulary import in_output_vocabulary, plan_output_vocabulary, relaid
from alloykit.recipe.model import ModelInput, Recipe
from alloykit.recipe.resolve import ParameterResolver

BASE_KEY = "base_model"
"""The key path of a base model merged as one more model (methods that use no base)."""


class Planner:
    """Walks a recipe's ``models:``, ``slices:`` or ``modules:`` form and decides each output
    tensor: its inputs, method, parameters, shape and dtype (:meth:`build`)."""

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
        self.vocabulary = plan_output_vocabulary(recipe, sources, self.reference)
        self.statistics = open_statistics_files(recipe, self.method, options, sources)
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
        self.dropped.extend(
            dropped_tensors(
                self.recipe,
                self.method,
                self.sources,
                self.used,
                self.reference,
                self.layout,
                drop_unmapped=self.options.drop_unmapped,
            )
        )
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
            return [*inputs, ModelInput(model=base_ref, key_path=BASE_KEY)], None
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
            base = ModelInput(model=base_ref, key_path=BASE_KEY)
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
        if in_output_vocabulary(self.vocabulary, self.sources, out_name, everyone):
            assert self.vocabulary is not None
            self.used.update(everyone)
            base = self.part.base_model_for(slice_index)
            refs, base_ref = relaid(
                self.vocabulary, self.derived, self.sources, base, out_name, refs, base_ref
            )
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
                statistics=statistics_of(
                    self.method,
                    self.statistics,
                    self.sources,
                    out_name,
                    as_read,
                    rows_differ=common_rows is not None or as_read != refs,
                ),
            )
        )

    def _meta(self, ref: TensorRef) -> Any:
        source = self.derived.get(ref.model) or self.sources[ref.model]
        return source.tensors[ref.name]

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


def _depth(name: str, num_layers: int) -> float:
    """mergekit's relative depth: i/(L-1) in the blocks (1 for a single block), 0 outside."""
    layer = parse_layer_name(name)
    if layer is None:
        return 0.0
    return layer.index / (num_layers - 1) if num_layers > 1 else 1.0
