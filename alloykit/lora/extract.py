"""Extract a LoRA adapter from a fine-tune: truncated SVD of each module's weight delta.

Module by module, the fine-tune's and the base's tensors are read (positional reads), their
difference factorised (:mod:`alloykit.lora.factorize`) and the factors appended to the adapter
file, so memory holds one module at a time. Every changed tensor is accounted for: low-rank,
saved in full (``modules_to_save``), or reported as not captured — never dropped silently.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from alloykit.arch.layers import Section, section_of, sort_key, tied_embeddings
from alloykit.checkpoint.source import ModelSource, open_source
from alloykit.dtypes import parse_dtype
from alloykit.engine.tensors import resolve_device
from alloykit.errors import AlloyError, PlanError
from alloykit.lora.adapter import (
    PREFIX,
    Layout,
    adapter_config,
    is_conv1d,
    module_of,
    task_type_of,
)
from alloykit.lora.factorize import RankRule, SvdMethod, factorize
from alloykit.lora.report import Capture, TensorReport, adapter_card
from alloykit.lora.writer import AdapterWriter
from alloykit.plan import tensor_seed

EMBEDDING_MODES = ("full", "low-rank")


@dataclass
class ExtractOptions:
    """How ``alloykit lora extract`` builds the adapter."""

    rank: int | None = None
    energy: float | None = None  # keep this share of each module's squared singular values
    max_rank: int | None = None
    svd: str = "exact"  # exact | randomized
    include: Sequence[str] = ()  # regexes over module names (re.search); all when empty
    exclude: Sequence[str] = ()
    embeddings: str = "full"  # full (modules_to_save) | low-rank (lora_embedding_A/B)
    save_unfactorable: bool = False  # changed 1-D / >2-D tensors: save their modules in full
    dtype: str = "float32"  # of the A and B factors
    device: str = "cpu"
    force: bool = False
    allow_pickle: bool = False

    def rule(self) -> RankRule:
        if self.svd not in {m.value for m in SvdMethod}:
            raise AlloyError(f"--svd: unknown value {self.svd!r}", "use exact or randomized")
        return RankRule(self.rank, self.energy, self.max_rank, SvdMethod(self.svd))


@dataclass
class ExtractResult:
    out_dir: Path
    rows: list[TensorReport]
    unchanged: int
    config: dict = field(repr=False)
    warnings: list[str] = field(default_factory=list)


def compile_filters(patterns: Sequence[str], option: str) -> list[re.Pattern[str]]:
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern))
        except re.error as exc:
            raise AlloyError(
                f"{option}: invalid regular expression {pattern!r} ({exc})",
                "patterns are Python regular expressions searched in module names",
            ) from None
    return compiled


def module_filter(include: Sequence[str], exclude: Sequence[str]) -> Callable[[str], bool]:
    """Whether a module name is selected: matches some include (if any) and no exclude."""
    keep = compile_filters(include, "--include")
    drop = compile_filters(exclude, "--exclude")

    def selected(module: str) -> bool:
        if keep and not any(p.search(module) for p in keep):
            return False
        return not any(p.search(module) for p in drop)

    return selected


def check_same_tensors(model: ModelSource, base: ModelSource) -> None:
    for name, meta in model.tensors.items():
        other = base.tensors.get(name)
        if other is None:
            raise PlanError(
                f"tensor {name!r} of model {model.reference!r} is missing from base "
                f"{base.reference!r}",
                "extract from a fine-tune of this base (same architecture and tensor names)",
            )
        if other.shape != meta.shape:
            raise PlanError(
                f"tensor {name!r}: shapes differ (model {model.reference!r}: {list(meta.shape)}, "
                f"base {base.reference!r}: {list(other.shape)})",
                "extract from a fine-tune of this base (same architecture and sizes)",
            )
    extra = sorted(set(base.tensors) - set(model.tensors))
    if extra:
        raise PlanError(
            f"tensor {extra[0]!r} of base {base.reference!r} is missing from model "
            f"{model.reference!r}",
            "extract from a fine-tune of this base (same architecture and tensor names)",
        )


def layout_of(name: str, config: dict) -> Layout | None:
    """How a tensor can be low-rank in PEFT, or None (not a 2-D float weight)."""
    if not name.endswith(".weight"):
        return None
    if section_of(name) is Section.PRE:
        return Layout.EMBEDDING
    return Layout.CONV1D if is_conv1d(config, name) else Layout.LINEAR


def extract_adapter(
    model: str | Path,
    base: str | Path,
    out_dir: str | Path,
    options: ExtractOptions | None = None,
) -> ExtractResult:
    """Write the adapter that turns ``base`` into (an approximation of) ``model`` into ``out_dir``.

    Factors use the symmetric split ``A = sqrt(S) Vᵀ``, ``B = U sqrt(S)`` and
    ``lora_alpha = r`` (scale 1) per module; per-module ranks go to ``rank_pattern``.
    """
    options = options or ExtractOptions()
    rule = options.rule()
    selected = module_filter(options.include, options.exclude)
    if options.embeddings not in EMBEDDING_MODES:
        raise AlloyError(
            f"--embeddings: unknown value {options.embeddings!r}", "use full or low-rank"
        )
    factor_dtype = parse_dtype(options.dtype, "--dtype").torch
    device = resolve_device(options.device)
    tuned = open_source(str(model), allow_pickle=options.allow_pickle)
    source = open_source(str(base), allow_pickle=options.allow_pickle)
    check_same_tensors(tuned, source)
    names = sorted(tuned.tensors, key=sort_key)
    layouts = {name: _factorable(name, tuned) for name in names}
    low_rank_embeddings = options.embeddings == "low-rank"
    for name, layout in layouts.items():
        if layout is None or not selected(module_of(name)):
            continue
        if layout is not Layout.EMBEDDING or low_rank_embeddings:
            rows, cols = tuned.tensors[name].shape
            rule.check_fits(module_of(name), rows, cols)
    modules: dict[str, list[str]] = {}
    for name in names:
        modules.setdefault(module_of(name), []).append(name)

    reports: list[TensorReport] = []
    ranks: dict[str, int] = {}
    saved: list[str] = []
    unchanged = 0
    with AdapterWriter(Path(out_dir), force=options.force) as writer:
        for module, tensor_names in modules.items():
            changed = {}
            for name in tensor_names:
                new, old = tuned.read(name), source.read(name)
                if not torch.equal(new, old):
                    changed[name] = (new, old)
            unchanged += len(tensor_names) - len(changed)
            if not changed:
                continue
            if not selected(module):
                reports += [_missed(n, t, Capture.EXCLUDED) for n, t in changed.items()]
                continue
            unfactorable = [n for n in changed if layouts[n] is None]
            full_embedding = not low_rank_embeddings and any(
                layouts[n] is Layout.EMBEDDING for n in changed
            )
            if full_embedding or (unfactorable and options.save_unfactorable):
                for name in tensor_names:
                    writer.add(
                        PREFIX + name, changed[name][0] if name in changed else tuned.read(name)
                    )
                reports += [_full(n, t) for n, t in changed.items()]
                saved.append(module)
                continue
            reports += [_missed(n, changed[n], Capture.NOT_CAPTURED) for n in unfactorable]
            for name in [n for n in changed if layouts[n] is not None]:
                layout = layouts[name]
                assert layout is not None
                new, old = changed.pop(name)
                delta = new.to(device, torch.float32) - old.to(device, torch.float32)
                row, a, b = low_rank(name, delta, layout, rule, factor_dtype)
                writer.add(layout.keys(module)[0], a)
                writer.add(layout.keys(module)[1], b)
                ranks[module] = a.shape[0]
                reports.append(row)
        if not reports:
            raise PlanError(
                f"model {tuned.reference!r} and base {source.reference!r} have identical tensors",
                "there is nothing to extract",
            )
        warnings = _tied_warning(source, reports, layouts)
        config = adapter_config(
            ranks=ranks,
            modules_to_save=saved,
            base_model=str(base),
            task_type=task_type_of(source.config),
            fan_in_fan_out=any(layouts[f"{m}.weight"] is Layout.CONV1D for m in ranks),
        )
        readme = adapter_card(
            "LoRA adapter extracted with alloykit",
            [*_summary(str(model), str(base), options, rule, unchanged), *warnings],
            reports,
        )
        written = writer.commit(config, readme)
    return ExtractResult(written, reports, unchanged, config, warnings)


def low_rank(
    name: str, delta: torch.Tensor, layout: Layout, rule: RankRule, dtype: torch.dtype
) -> tuple[TensorReport, torch.Tensor, torch.Tensor]:
    """Factors (A, B) of one delta, cast to ``dtype`` on CPU, and their error as written."""
    low = factorize(layout.factor_target(delta), rule, generator_seed=tensor_seed(0, name))
    a, b = low.a.to(dtype).cpu(), low.b.to(dtype).cpu()
    residual = delta.cpu() - layout.delta(a, b, 1.0)
    row = TensorReport(
        name,
        tuple(delta.shape),
        Capture.LOW_RANK,
        float(delta.double().square().sum()),
        float(residual.double().square().sum()),
        low.rank,
    )
    return row, a, b


def _tied_warning(
    base: ModelSource, reports: list[TensorReport], layouts: dict[str, Layout | None]
) -> list[str]:
    """PeftModel changes only the input side of tied embeddings; baking changes both."""
    captured = [
        r.name
        for r in reports
        if layouts.get(r.name) is Layout.EMBEDDING and r.capture in (Capture.LOW_RANK, Capture.FULL)
    ]
    if not captured or not tied_embeddings(base.config):
        return []
    return [
        "",
        f"Note: the model ties its output head to {captured[0]}. PeftModel applies the "
        "embedding change to the input embeddings only (the tied head keeps the base weights); "
        "`alloykit lora apply` and PEFT's merge_and_unload() change the shared tensor, as in "
        "the fine-tune. Exclude the embeddings to make both agree.",
    ]


def _factorable(name: str, model: ModelSource) -> Layout | None:
    meta = model.tensors[name]
    if len(meta.shape) != 2 or not meta.dtype.is_floating_point:
        return None
    return layout_of(name, model.config)


def _missed(name: str, pair: tuple[torch.Tensor, torch.Tensor], capture: Capture) -> TensorReport:
    new, old = pair
    delta_sq = _delta_sq(new, old)
    return TensorReport(name, tuple(new.shape), capture, delta_sq, delta_sq)


def _full(name: str, pair: tuple[torch.Tensor, torch.Tensor]) -> TensorReport:
    new, old = pair
    return TensorReport(name, tuple(new.shape), Capture.FULL, _delta_sq(new, old), 0.0)


def _delta_sq(new: torch.Tensor, old: torch.Tensor) -> float:
    if not new.dtype.is_floating_point:
        return float((new != old).sum())
    return float((new.double() - old.double()).square().sum())


def _summary(
    model: str, base: str, options: ExtractOptions, rule: RankRule, unchanged: int
) -> list[str]:
    how = f"rank {rule.rank}" if rule.rank else f"energy {rule.energy:g} per module"
    if rule.max_rank:
        how += f", at most rank {rule.max_rank}"
    return [
        f"Extracted from `{model}` against base `{base}`: {how}, {rule.svd.value} SVD, "
        f"embeddings {options.embeddings}, factors in {options.dtype}.",
        "",
        "Each module's delta ΔW = W_model − W_base is approximated by its truncated SVD "
        "U S Vᵀ, split symmetrically: A = sqrt(S) Vᵀ, B = U sqrt(S), lora_alpha = r (scale 1).",
        f"{unchanged} tensors are identical in model and base.",
    ]
