"""MoE recipe → Plan: the dense merge plan, with every MLP replaced by routers and experts.

The tensors outside the MLPs (attention, norms, embeddings, head) are planned by the merge
spine from the recipe's dense part (the base model's, or a catalog method over the experts);
each layer's MLP tensors are then replaced by the output format's router, routed experts
and shared experts. Router weights are computed here, before the engine runs; everything
else is read and written by the engine like any merged tensor.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

import torch

from alloykit.arch.layers import Section, parse_layer_name, section_of
from alloykit.checkpoint.source import ModelSource, open_source
from alloykit.compose.dense import DenseMlp, dense_mlps, expert_mismatch
from alloykit.compose.derived import (
    computed_source,
    side_by_side_source,
    transformed_source,
)
from alloykit.compose.formats import (
    FORMATS,
    MoEFormat,
    MoEShape,
    SharedPolicy,
    build_config,
    format_names,
    formats_named,
)
from alloykit.compose.gates import Prompts, degenerate_layers, gate_vectors
from alloykit.compose.recipe import ExpertSpec, MoERecipe
from alloykit.compose.upcycling import ExpertTransform
from alloykit.dtypes import F32, DType, parse_dtype
from alloykit.plan import DroppedTensor, Plan, PlanEntry, PlanOptions, TensorRef, config_dtype
from alloykit.planner import make_plan

GATES = "(router weights)"
SHARED = "(shared experts)"


@dataclass(frozen=True)
class MoELayout:
    """What the MoE is made of, for ``--dry-run`` and tests."""

    format: MoEFormat
    experts: tuple[str, ...]
    shared_experts: tuple[str, ...]
    experts_per_token: int
    gate_mode: str

    def summary(self) -> str:
        shared = f", {len(self.shared_experts)} shared" if self.shared_experts else ""
        return (
            f"{self.format.name} ({self.format.model_type}): {len(self.experts)} experts, "
            f"top-{self.experts_per_token}{shared}, gate_mode {self.gate_mode}"
        )


@dataclass
class MoEPlan(Plan):
    layout: MoELayout | None = None
    gates: dict[str, torch.Tensor] = field(default_factory=dict)

    def fingerprint(self) -> str:
        """The merge plan's fingerprint, plus the router weights (they depend on prompts and
        on the tokenizer, which no other part of the fingerprint covers)."""
        digest = hashlib.sha256(super().fingerprint().encode())
        for name in sorted(self.gates):
            digest.update(name.encode())
            digest.update(self.gates[name].float().numpy().tobytes())
        return digest.hexdigest()


def make_moe_plan(
    recipe: MoERecipe, options: PlanOptions | None = None, device: torch.device | None = None
) -> MoEPlan:
    """Open every model by headers, compute the routers, and plan every output tensor."""
    return _MoEPlanner(recipe, options or PlanOptions(), device or torch.device("cpu")).build()


class _MoEPlanner:
    def __init__(self, recipe: MoERecipe, options: PlanOptions, device: torch.device) -> None:
        self.recipe = recipe
        self.options = options
        self.device = device
        self.sources: dict[str, ModelSource] = {}
        self.entries: list[PlanEntry] = []
        self.warnings: list[str] = []
        self.read_through: set[TensorRef] = set()  # real tensors read by derived sources
        out = recipe.dense.out_dtype or recipe.dense.dtype
        self.out_dtype = options.out_dtype or (parse_dtype(out, "out_dtype") if out else None)

    def build(self) -> MoEPlan:
        recipe = self.recipe
        for reference in (
            recipe.base_model,
            *(s.model for s in recipe.experts + recipe.shared_experts),
        ):
            self._open(reference)
        self.base = self.sources[recipe.base_model]
        self.model_type = str(self.base.config.get("model_type", "unknown"))
        fmt, shared_count = self._choose_format()
        self.mlps = self._dense_mlps()
        experts = list(recipe.experts)
        shared = list(recipe.shared_experts) or [
            ExpertSpec(recipe.base_model, "num_shared_experts") for _ in range(shared_count)
        ]
        for spec in (*experts, *shared):
            self._check_expert(spec)
        self.dense = make_plan(recipe.dense, self.options)  # everything outside the MLPs
        self.sources.update(self.dense.sources)
        self.base = self.sources[recipe.base_model]
        self.warnings.extend(self.dense.warnings)
        routed_scale, shared_scale = self._default_scales(fmt, len(shared))
        expert_refs = [
            self._expert_source(s, f"experts[{i}]", routed_scale) for i, s in enumerate(experts)
        ]
        shared_refs = [
            self._expert_source(s, f"shared_experts[{i}]", shared_scale)
            for i, s in enumerate(shared)
        ]
        gates = self._gates(fmt, experts, shared)
        self.sources[GATES] = computed_source(GATES, self.base.root, gates)
        shared_ref = self._shared_source(fmt, shared_refs)
        self.entries = [e for e in self.dense.entries if not self._is_mlp(e.name)]
        for mlp in self.mlps:
            self._plan_layer(fmt, mlp, expert_refs, shared_ref)
        self.entries.sort(key=lambda e: _order(e.name))
        config = self._config(fmt, len(experts), len(shared))
        layout = MoELayout(
            fmt,
            tuple(s.model for s in experts),
            tuple(s.model for s in shared),
            recipe.experts_per_token,
            recipe.gate_mode,
        )
        return MoEPlan(
            recipe=self.dense.recipe,
            method=self.dense.method,
            sources=self.sources,
            entries=self.entries,
            dropped=self._dropped(),
            warnings=self.warnings,
            config=config,
            reference=recipe.base_model,
            tokenizer_source=recipe.base_model,
            compute_dtype=self.dense.compute_dtype,
            seed=recipe.seed,
            description=f"MoE, {layout.summary()}",
            layout=layout,
            gates=gates,
        )

    # -- inputs ----------------------------------------------------------------------------
    def _open(self, reference: str) -> None:
        if reference not in self.sources:
            self.sources[reference] = open_source(
                reference,
                search_dirs=self.recipe.search_dirs,
                allow_pickle=self.options.allow_pickle,
            )

    def _choose_format(self) -> tuple[MoEFormat, int]:
        recipe = self.recipe
        candidates = formats_named(recipe.architecture)
        if not candidates:
            raise recipe.error(
                "architecture",
                f"unknown MoE architecture {recipe.architecture!r}",
                f"use one of: {format_names()}",
            )
        prompts = any(s.has_prompts for s in recipe.shared_experts)
        reasons = []
        for fmt in candidates:
            count = self._shared_count(fmt)
            reason = fmt.unsupported(self.model_type, count, prompts)
            if reason is None:
                return fmt, count
            reasons.append(reason)
        supported = "; ".join(
            f"{f.name} ({f.model_type}) from {', '.join(f.input_types)}" for f in FORMATS
        )
        if recipe.architecture is not None:
            raise recipe.error(
                "architecture", f"cannot build it: {reasons[0]}", f"supported: {supported}"
            )
        raise recipe.error(
            "base_model",
            f"no MoE architecture can be built from {self.model_type} models with "
            f"{self._shared_count(None)} shared experts",
            f"supported: {supported}",
        )

    def _shared_count(self, fmt: MoEFormat | None) -> int:
        recipe = self.recipe
        if not recipe.upcycled:
            return len(recipe.shared_experts)
        if recipe.num_shared_experts is not None:
            return recipe.num_shared_experts
        return 1 if fmt is not None and fmt.shared is SharedPolicy.ONE_GATED else 0

    def _dense_mlps(self) -> list[DenseMlp]:
        try:
            return dense_mlps(self.base)
        except ValueError as exc:
            raise self.recipe.error(
                "base_model", str(exc), "use Llama-, Mistral- or Qwen-style dense models"
            ) from None

    def _check_expert(self, spec: ExpertSpec) -> None:
        reason = expert_mismatch(self.base, self.sources[spec.model], self.mlps)
        if reason is not None:
            where = (
                spec.key_path
                if spec.key_path.startswith("num_")
                else spec.key_path + ".source_model"
            )
            raise self.recipe.error(
                where, reason, "every expert must have the base model's architecture and sizes"
            )

    def _default_scales(self, fmt: MoEFormat, shared: int) -> tuple[float, float]:
        """Residual scales that keep an upcycled model's function: routed weights sum to 1,
        so routed + shared outputs must too (a Qwen shared expert's zero gate passes half)."""
        if not self.recipe.upcycled or shared == 0:
            return 1.0, 1.0
        if fmt.shared is SharedPolicy.ONE_GATED:
            return 0.5, 1.0
        return 1.0 / (shared + 1), 1.0 / (shared + 1)

    def _expert_source(self, spec: ExpertSpec, label: str, default_scale: float) -> str:
        """The model an expert's MLP is read from: the checkpoint, or a transformed copy."""
        transform = ExpertTransform(
            expert=label,
            seed=self.recipe.seed,
            reinit_ratio=spec.reinit_ratio,
            noise_scale=spec.noise_scale,
            residual_scale=default_scale if spec.residual_scale is None else spec.residual_scale,
        )
        if not transform.changes_weights:
            return spec.model
        reference = f"{spec.model} [{label}: {transform.describe()}]"
        names = [n for mlp in self.mlps for n in mlp.names.values()]
        source = self.sources[spec.model]
        self.sources[reference] = transformed_source(reference, source, names, transform)
        self.read_through.update(TensorRef(spec.model, n) for n in names)
        return reference

    def _shared_source(self, fmt: MoEFormat, refs: list[str]) -> str | None:
        """Where the shared MLP is read from; several DeepSeek-style ones are laid side by side."""
        if fmt.shared is SharedPolicy.NONE:
            return None
        if len(refs) == 1:
            return refs[0]
        if not refs:
            return self._empty_shared()
        parts = {}
        for mlp in self.mlps:
            for projection, name in mlp.names.items():
                dim = 1 if projection == "down_proj" else 0
                parts[name] = (dim, [(self.sources[r], name) for r in refs])
        for reference in refs:
            self.read_through.update(TensorRef(reference, n) for n in parts)
        self.sources[SHARED] = side_by_side_source(SHARED, self.base.root, parts)
        return SHARED

    def _empty_shared(self) -> str:
        """A DeepSeek-style layout with no shared experts still holds a zero-width shared MLP."""
        tensors = {}
        for mlp in self.mlps:
            for projection, name in mlp.names.items():
                rows, cols = self.base.tensors[name].shape
                shape = (rows, 0) if projection == "down_proj" else (0, cols)
                tensors[name] = torch.zeros(shape, dtype=self.base.tensors[name].dtype.torch)
        self.sources[SHARED] = computed_source(SHARED, self.base.root, tensors)
        return SHARED

    # -- routers ---------------------------------------------------------------------------
    def _gates(
        self, fmt: MoEFormat, experts: list[ExpertSpec], shared: list[ExpertSpec]
    ) -> dict[str, torch.Tensor]:
        recipe = self.recipe
        prompted = [Prompts(s.positive_prompts, s.negative_prompts) for s in experts]
        gated_shared = fmt.shared is SharedPolicy.ONE_GATED
        if gated_shared:
            prompted += [
                Prompts(s.positive_prompts, s.negative_prompts) if s.positive_prompts else None
                for s in shared
            ]
        hidden = self.base.tensors[self.mlps[0].names["gate_proj"]].shape[1]
        mlp_sources = [self.sources[s.model] for s in experts]
        if gated_shared:
            mlp_sources += [self.sources[s.model] for s in shared]
        vectors = gate_vectors(
            recipe.gate_mode,
            self.base,
            prompted,
            mlp_modules=[m.module for m in self.mlps],
            hidden_size=hidden,
            seed=recipe.seed,
            device=self.device,
            mlp_sources=mlp_sources,
        )
        self._warn_degenerate(vectors[:, : len(experts)])
        gates: dict[str, torch.Tensor] = {}
        for layer, mlp in enumerate(self.mlps):
            gates[fmt.router(mlp.prefix)] = vectors[layer, : len(experts)].contiguous()
            if gated_shared:
                gates[fmt.shared_gate(mlp.prefix)] = vectors[layer, len(experts) :].contiguous()
            if fmt.score_bias:
                gates[fmt.router_bias(mlp.prefix)] = torch.zeros(len(experts))
        return gates

    def _warn_degenerate(self, vectors: torch.Tensor) -> None:
        pairs: dict[tuple[int, int], list[int]] = {}
        for layer, a, b in degenerate_layers(vectors):
            pairs.setdefault((a, b), []).append(layer)
        for (a, b), layers in pairs.items():
            where = (
                "every layer"
                if len(layers) == len(vectors)
                else "layers " + ", ".join(str(i) for i in layers)
            )
            self.warnings.append(
                f"experts[{a}] and experts[{b}] have nearly the same router weights "
                f"(cosine > 0.99) in {where}: the router cannot tell them apart; give them "
                "more distinct prompts"
            )
        models = {s.model for s in self.recipe.experts}
        if len(models) == 1 and len(self.recipe.experts) > 1 and not self.recipe.upcycled:
            self.warnings.append(
                "every expert is the same model: the MoE computes that model's function "
                "until it is trained"
            )

    # -- output tensors --------------------------------------------------------------------
    def _plan_layer(
        self,
        fmt: MoEFormat,
        mlp: DenseMlp,
        expert_refs: list[str],
        shared_ref: str | None,
    ) -> None:
        dtype = self.out_dtype or self.base.tensors[mlp.names["gate_proj"]].dtype
        routers = [(fmt.router(mlp.prefix), dtype)]
        if fmt.shared is SharedPolicy.ONE_GATED:
            routers.append((fmt.shared_gate(mlp.prefix), dtype))
        if fmt.score_bias:
            routers.append((fmt.router_bias(mlp.prefix), F32))  # as transformers keeps it
        for name, router_dtype in routers:
            self._add(name, TensorRef(GATES, name), router_dtype)
        for expert, reference in enumerate(expert_refs):
            for projection, name in mlp.names.items():
                self._add(fmt.expert(mlp.prefix, expert, projection), TensorRef(reference, name))
        if shared_ref is not None:
            for projection, name in mlp.names.items():
                self._add(fmt.shared_expert(mlp.prefix, projection), TensorRef(shared_ref, name))

    def _add(self, out_name: str, ref: TensorRef, dtype: DType | None = None) -> None:
        meta = self.sources[ref.model].tensors[ref.name]
        self.entries.append(
            PlanEntry(
                name=out_name,
                shape=meta.shape,
                dtype=dtype or self.out_dtype or meta.dtype,
                method="passthrough",
                inputs=(ref,),
                base=None,
                per_model={"scale": (1.0,)},
                globals={},
            )
        )

    def _is_mlp(self, name: str) -> bool:
        return any(name in mlp.names.values() for mlp in self.mlps)

    # -- bookkeeping -----------------------------------------------------------------------
    def _config(self, fmt: MoEFormat, experts: int, shared: int) -> dict[str, Any]:
        first = self.mlps[0].names
        q_bias = any(n.endswith("self_attn.q_proj.bias") for n in self.base.tensors)
        shape = MoEShape(
            experts=experts,
            experts_per_token=self.recipe.experts_per_token,
            shared_experts=shared,
            intermediate_size=self.base.tensors[first["gate_proj"]].shape[0],
            attention_bias=q_bias,
            num_layers=len(self.mlps),
        )
        config = build_config(fmt, self.base.config, shape)
        config["dtype"] = str(config_dtype(self.entries))
        window = self.base.config.get("sliding_window")
        if fmt.model_type == "glm4_moe" and self.model_type == "mistral" and window:
            self.warnings.append(
                f"the base model's sliding window ({window} tokens) is not kept: {fmt.name} "
                f"({fmt.model_type}) attends to the whole context"
            )
        return config

    def _dropped(self) -> list[DroppedTensor]:
        used = {ref for e in self.entries for ref in (*e.inputs, *([e.base] if e.base else []))}
        used |= self.read_through
        earlier = {(d.model, d.name): d.reason for d in self.dense.dropped}
        dropped = []
        for reference, source in self.sources.items():
            if reference in (GATES, SHARED) or not source.files:
                continue
            for name in source.tensors:
                if TensorRef(reference, name) in used:
                    continue
                reason = earlier.get((reference, name)) or self._drop_reason(name)
                dropped.append(DroppedTensor(reference, name, reason))
        return dropped

    def _drop_reason(self, name: str) -> str:
        if self._is_mlp(name):
            return "its MLP is replaced by the experts"
        method = self.dense.method.name
        if method == "passthrough":
            return "non-expert tensors come from the base model (set shared_tensors: to merge them)"
        return f"shared_tensors merges the experts' non-expert tensors with {method}"


def _order(name: str) -> tuple:
    """Input-to-output order, with expert numbers compared as numbers."""
    layer = parse_layer_name(name)
    section = Section.LAYER if layer else section_of(name)
    index = layer.index if layer else 0
    rest = layer.rest if layer else name
    return (section, index, tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", rest)))
