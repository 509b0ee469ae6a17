"""Merge LoRA adapters in delta-W space with the catalog's task-vector methods.

Each adapter changes a module's weight by ``ΔW_i = scale_i · B_i @ A_i``. Merging the A's and
the B's separately (PEFT's ``add_weighted_adapter`` with ``linear``, ``ties``, ``dare_*``) gives
a product ``(Σ b_i B_i)(Σ a_j A_j)`` whose cross-terms ``B_i A_j`` no adapter contains. Here
every method sees the deltas themselves: the stacked ``ΔW_i`` go through the registered kernel
with a zero base (a task vector is its own delta), and the merged delta is factorised again by
truncated SVD. Methods linear in their inputs (``linear``, ``task_arithmetic``) can instead be
merged exactly by concatenation: ``A = [A_1; A_2; ...]``, ``B = [c_1 s_1 B_1, c_2 s_2 B_2, ...]``
gives ``B A = Σ c_i ΔW_i`` (rank = the sum of the ranks), negative weights included.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from alloykit.arch.layers import sort_key
from alloykit.checkpoint.source import ModelSource, open_source
from alloykit.dtypes import parse_dtype
from alloykit.engine.tensors import resolve_device
from alloykit.errors import AlloyError, CheckpointError
from alloykit.lora.adapter import PREFIX, Layout, LoraAdapter, adapter_config, open_adapter
from alloykit.lora.extract import low_rank
from alloykit.lora.factorize import RankRule, SvdMethod
from alloykit.lora.report import Capture, TensorReport, adapter_card
from alloykit.lora.source import check_adapter_fits
from alloykit.lora.writer import AdapterWriter
from alloykit.methods import REQUIRED, BasePolicy, Method, Scope, get_method, method_names
from alloykit.methods.task_vectors import METHODS as TASK_VECTOR_METHODS
from alloykit.plan import tensor_seed

DELTA_METHODS = ("linear", *(m.name for m in TASK_VECTOR_METHODS), "sce")
CONCATENABLE = ("linear", "task_arithmetic")  # linear in their inputs
Value = float | int | bool | str


@dataclass
class AdapterMergeOptions:
    """How ``alloykit lora merge`` combines adapters."""

    method: str = "linear"
    parameters: Mapping[str, Value | Sequence[Value]] = field(default_factory=dict)
    rank: int | None = None  # re-factorise to this rank; with no rank/energy: concatenate
    energy: float | None = None
    max_rank: int | None = None
    svd: str = "exact"
    base: str | None = None  # needed when an adapter saves modules in full
    seed: int = 0
    dtype: str = "float32"
    device: str = "cpu"
    force: bool = False
    allow_pickle: bool = False


@dataclass
class AdapterMergeResult:
    out_dir: Path
    rows: list[TensorReport]
    concatenated: bool
    config: dict = field(repr=False)


def merge_adapters(
    adapters: Sequence[str | Path], out_dir: str | Path, options: AdapterMergeOptions | None = None
) -> AdapterMergeResult:
    """Merge ``adapters`` into one adapter at ``out_dir`` (written atomically)."""
    options = options or AdapterMergeOptions()
    method = _method(options.method, len(adapters))
    kwargs = method_arguments(method, options.parameters, len(adapters))
    concatenate = options.rank is None and options.energy is None
    if concatenate and method.name not in CONCATENABLE:
        raise AlloyError(
            f"method {method.name!r} needs --rank or --energy",
            "its merged delta is not a sum of the adapters' factors, so it is factorised again "
            "by SVD; only linear and task_arithmetic merge exactly by concatenation",
        )
    rule = None
    if not concatenate:
        if options.svd not in {m.value for m in SvdMethod}:
            raise AlloyError(f"--svd: unknown value {options.svd!r}", "use exact or randomized")
        rule = RankRule(options.rank, options.energy, options.max_rank, SvdMethod(options.svd))
    factor_dtype = parse_dtype(options.dtype, "--dtype").torch
    device = resolve_device(options.device)
    base = open_source(options.base, allow_pickle=options.allow_pickle) if options.base else None
    opened = [
        open_adapter(
            str(a),
            allow_pickle=options.allow_pickle,
            base_config=base.config if base else None,
        )
        for a in adapters
    ]
    shapes = _check_compatible(opened, base)
    if rule is not None:
        for name, (layout, shape) in shapes.items():
            if layout is not None:
                rule.check_fits(name.removesuffix(".weight"), *shape)
    coefficients = linear_coefficients(method, kwargs, len(opened)) if concatenate else None

    rows: list[TensorReport] = []
    ranks: dict[str, int] = {}
    saved: set[str] = set()
    with AdapterWriter(Path(out_dir), force=options.force) as writer:
        for name in sorted(shapes, key=sort_key):
            layout = shapes[name][0]
            module = name.rsplit(".", 1)[0]
            if layout is None:
                assert base is not None
                row = _merge_full(name, opened, base, method, kwargs, options.seed, device)
                writer.add(PREFIX + name, row[1])
                rows.append(row[0])
                saved.add(module)
            elif coefficients is not None:
                row, a, b = _concatenate(name, layout, opened, coefficients)
                if row.capture is Capture.LOW_RANK:
                    writer.add(layout.keys(module)[0], a.to(factor_dtype))
                    writer.add(layout.keys(module)[1], b.to(factor_dtype))
                    ranks[module] = a.shape[0]
                rows.append(row)
            else:
                assert rule is not None
                merged = _merged_delta(name, opened, method, kwargs, options.seed, device)
                if not bool(merged.any()):
                    rows.append(TensorReport(name, tuple(merged.shape), Capture.ZERO, 0.0, 0.0))
                    continue
                row, a, b = low_rank(name, merged, layout, rule, factor_dtype)
                writer.add(layout.keys(module)[0], a)
                writer.add(layout.keys(module)[1], b)
                ranks[module] = a.shape[0]
                rows.append(row)
        first = opened[0].config
        config = adapter_config(
            ranks=ranks,
            modules_to_save=sorted(saved),
            base_model=options.base or first.get("base_model_name_or_path"),
            task_type=first.get("task_type"),
            fan_in_fan_out=any(a.fan_in_fan_out for a in opened),
        )
        how = (
            "exactly, by concatenating the factors"
            if concatenate
            else f"in delta-W space, re-factorised by {options.svd} SVD"
        )
        summary = [
            f"Merge of {len(opened)} adapters with `{method.name}` {how}: "
            + ", ".join(f"`{a.reference}`" for a in opened)
            + ".",
            "",
            f"Parameters: {_parameters_text(method, kwargs)}.",
        ]
        readme = adapter_card("LoRA adapter merged with alloykit", summary, rows)
        written = writer.commit(config, readme)
    return AdapterMergeResult(written, rows, concatenate, config)


def _method(name: str, count: int) -> Method:
    try:
        method = get_method(name)
    except KeyError:
        close = difflib.get_close_matches(name, method_names(), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise AlloyError(
            f"unknown merge method {name!r}",
            f"{hint}adapters merge with {', '.join(DELTA_METHODS)}",
        ) from None
    if method.name not in DELTA_METHODS:
        raise AlloyError(
            f"method {name!r} does not merge task vectors, so it cannot merge adapters",
            f"use one of {', '.join(DELTA_METHODS)}",
        )
    low, high = method.min_models, method.max_models
    if count < low or (high is not None and count > high):
        raise AlloyError(f"method {name!r} merges {low} or more adapters, got {count}")
    return method


def method_arguments(
    method: Method, given: Mapping[str, Value | Sequence[Value]], count: int
) -> dict[str, Any]:
    """Keyword arguments of ``method``'s kernel: defaults, then ``given``, checked by its contract.

    A per-model parameter takes one value (for every adapter) or one value per adapter.
    """
    for name in given:
        if method.param(name) is None:
            allowed = ", ".join(p.name for p in method.params)
            raise AlloyError(
                f"method {method.name!r} has no parameter {name!r}", f"its parameters: {allowed}"
            )
    kwargs: dict[str, Any] = {}
    for param in method.params:
        value = given.get(param.name, param.default)
        if value is REQUIRED:
            raise AlloyError(
                f"method {method.name!r} needs parameter {param.name!r}",
                f"give --param {param.name}=VALUE",
            )
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        if param.scope is Scope.GLOBAL and len(values) != 1:
            raise AlloyError(f"parameter {param.name!r} takes one value, got {len(values)}")
        if param.scope is Scope.PER_MODEL and len(values) not in (1, count):
            raise AlloyError(
                f"parameter {param.name!r} takes 1 or {count} values (one per adapter), "
                f"got {len(values)}"
            )
        try:
            checked = [param.check(v) for v in values]
        except ValueError as exc:
            raise AlloyError(f"parameter {param.name!r}: {exc}", f"{param.allowed()}") from None
        if param.scope is Scope.PER_MODEL:
            kwargs[param.name] = torch.tensor(
                checked * (count // len(checked)), dtype=torch.float32
            )
        else:
            kwargs[param.name] = checked[0]
    return kwargs


def linear_coefficients(method: Method, kwargs: dict[str, Any], count: int) -> list[float]:
    """``c`` with ``kernel(ΔW) = Σ c_i ΔW_i``: the kernel applied to the basis vectors."""
    basis = torch.eye(count)
    base = torch.zeros(count) if method.base is BasePolicy.REQUIRED else None
    return [float(c) for c in method.kernel(basis, base, **kwargs)]


def _check_compatible(
    adapters: list[LoraAdapter], base: ModelSource | None
) -> dict[str, tuple[Layout | None, tuple[int, ...]]]:
    """Every changed tensor with its layout (None: saved in full) and shape, checked to agree."""
    shapes: dict[str, tuple[Layout | None, tuple[int, ...]]] = {}
    owners: dict[str, str] = {}
    for adapter in adapters:
        if base is not None:
            check_adapter_fits(adapter, base)
        if adapter.full and base is None:
            name = next(iter(adapter.full))
            raise CheckpointError(
                f"adapter {adapter.reference!r} saves {name!r} in full (modules_to_save)",
                "pass --base BASE: merging full tensors needs the base model's weights",
            )
        found: dict[str, tuple[Layout | None, tuple[int, ...]]] = {
            name: (m.layout, (m.rows, m.cols)) for name, m in adapter.modules.items()
        }
        for name, key in adapter.full.items():
            found[name] = (None, tuple(adapter.shape_of(key)))
        for name, entry in found.items():
            seen = shapes.setdefault(name, entry)
            owners.setdefault(name, adapter.reference)
            if seen[1] != entry[1]:
                raise CheckpointError(
                    f"adapters {owners[name]!r} and {adapter.reference!r} disagree on the shape "
                    f"of {name!r} ({list(seen[1])} vs {list(entry[1])})",
                    "merge adapters made for the same base model",
                )
            if seen[0] != entry[0] and None not in (seen[0], entry[0]):
                raise CheckpointError(
                    f"adapters {owners[name]!r} and {adapter.reference!r} adapt {name!r} "
                    f"differently ({seen[0].value} vs {entry[0].value})",
                    "merge adapters made for the same base model",
                )
            if entry[0] is None:
                shapes[name] = entry
    return shapes


def _concatenate(
    name: str, layout: Layout, adapters: list[LoraAdapter], coefficients: list[float]
) -> tuple[TensorReport, torch.Tensor, torch.Tensor]:
    a_parts, b_parts = [], []
    for adapter, c in zip(adapters, coefficients, strict=True):
        module = adapter.modules.get(name)
        if module is None or c == 0:
            continue
        a, b = adapter.factors(name)
        a_parts.append(a.float())
        b_parts.append(b.float() * (c * module.scale))
    any_module = next(a.modules[name] for a in adapters if name in a.modules)
    shape = (any_module.rows, any_module.cols)
    if not a_parts:
        empty = torch.empty(0)
        return TensorReport(name, shape, Capture.ZERO, 0.0, 0.0), empty, empty
    a, b = torch.cat(a_parts, 0), torch.cat(b_parts, 1)
    delta_sq = float(layout.delta(a, b, 1.0).double().square().sum())
    return TensorReport(name, shape, Capture.LOW_RANK, delta_sq, 0.0, a.shape[0]), a, b


def _stacked_deltas(name: str, adapters: list[LoraAdapter], device: torch.device) -> torch.Tensor:
    module = next(a.modules[name] for a in adapters if name in a.modules)
    stacked = torch.zeros((len(adapters), module.rows, module.cols), device=device)
    for slot, adapter in zip(stacked, adapters, strict=True):
        if name in adapter.modules:
            slot.copy_(adapter.delta(name))
    return stacked


def _run_kernel(
    method: Method,
    stacked: torch.Tensor,
    kwargs: dict[str, Any],
    seed: int,
    name: str,
) -> torch.Tensor:
    device_kwargs = {
        k: v.to(stacked.device) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()
    }
    if method.random:
        device_kwargs["seed"] = tensor_seed(seed, name)
    base = torch.zeros_like(stacked[0]) if method.base is BasePolicy.REQUIRED else None
    try:
        return method.kernel(stacked, base, **device_kwargs)
    except ValueError as exc:
        raise AlloyError(
            f"tensor {name!r}: method {method.name!r} cannot merge it: {exc}",
            "adjust the method's parameters (see `alloykit methods`)",
        ) from None


def _merged_delta(
    name: str,
    adapters: list[LoraAdapter],
    method: Method,
    kwargs: dict[str, Any],
    seed: int,
    device: torch.device,
) -> torch.Tensor:
    return _run_kernel(method, _stacked_deltas(name, adapters, device), kwargs, seed, name)


def _merge_full(
    name: str,
    adapters: list[LoraAdapter],
    base: ModelSource,
    method: Method,
    kwargs: dict[str, Any],
    seed: int,
    device: torch.device,
) -> tuple[TensorReport, torch.Tensor]:
    """A tensor some adapter saves whole: merge the deltas to the base, save the result whole."""
    original = base.read(name)
    weight = original.to(device, torch.float32)
    stacked = torch.zeros((len(adapters), *weight.shape), device=device)
    for slot, adapter in zip(stacked, adapters, strict=True):
        key = adapter.full.get(name)
        if key is not None:
            slot.copy_(adapter.read(key).to(device, torch.float32) - weight)
        if name in adapter.modules:
            slot.add_(adapter.delta(name).to(device))
    merged = _run_kernel(method, stacked, kwargs, seed, name)
    result = (weight + merged).to(original.dtype).cpu()
    delta_sq = float(merged.double().square().sum())
    return TensorReport(name, tuple(weight.shape), Capture.FULL, delta_sq, 0.0), result


def _parameters_text(method: Method, kwargs: dict[str, Any]) -> str:
    parts = []
    for name, value in kwargs.items():
        if isinstance(value, torch.Tensor):
            value = [round(float(v), 6) for v in value]
        parts.append(f"{name}={value}")
    return ", ".join(parts) or "none"
