"""PEFT LoRA adapter directories: reading one, and the names and config of one we write.

A PEFT adapter is ``adapter_config.json`` plus ``adapter_model.safetensors`` whose keys are
``base_model.model.<module>.lora_A.weight`` / ``.lora_B.weight`` (linear layers),
``.lora_embedding_A`` / ``.lora_embedding_B`` (embeddings), and full tensors for the
``modules_to_save`` (``<module>.<param>``, or ``<module>.base_layer.<param>``). A module's
weight changes by ``scale · B @ A`` (transposed for embeddings and GPT-2's Conv1D layers),
with ``scale = lora_alpha / r`` (``/ sqrt(r)`` with ``use_rslora``); ``r`` and ``lora_alpha``
come from ``rank_pattern`` / ``alpha_pattern`` when a key there matches the module name.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import torch

from alloykit.arch.layers import parse_layer_name
from alloykit.checkpoint.safetensors_format import TensorEntry, read_header, read_tensor
from alloykit.checkpoint.source import load_pickle, locate
from alloykit.errors import CheckpointError

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PICKLE_FILE = "adapter_model.bin"
PREFIX = "base_model.model."
CONV1D_FAMILIES = frozenset({"gpt2"})  # transformers' Conv1D stores weights as [in, out]


class Layout(str, Enum):
    """How a module's stored weight relates to ``B @ A``."""

    LINEAR = "linear"  # W[out, in] += scale · B A
    CONV1D = "conv1d"  # W[in, out] += scale · (B A)ᵀ  (fan_in_fan_out)
    EMBEDDING = "embedding"  # W[vocab, dim] += scale · (B A)ᵀ

    @property
    def transposed(self) -> bool:
        return self is not Layout.LINEAR

    def keys(self, module: str) -> tuple[str, str]:
        """PEFT's names of the A and B factors of ``module``."""
        if self is Layout.EMBEDDING:
            return f"{PREFIX}{module}.lora_embedding_A", f"{PREFIX}{module}.lora_embedding_B"
        return f"{PREFIX}{module}.lora_A.weight", f"{PREFIX}{module}.lora_B.weight"

    def delta(self, a: torch.Tensor, b: torch.Tensor, scale: float) -> torch.Tensor:
        """The change of the stored weight, in float32."""
        product = (b.float() @ a.float()) * scale
        return product.T if self.transposed else product

    def factor_target(self, delta: torch.Tensor) -> torch.Tensor:
        """The matrix ``B @ A`` must approximate for a stored-weight ``delta``."""
        return delta.T if self.transposed else delta


def is_conv1d(config: dict[str, Any], tensor_name: str) -> bool:
    """GPT-2-style checkpoints keep their block projections in transposed Conv1D layers."""
    return config.get("model_type") in CONV1D_FAMILIES and parse_layer_name(tensor_name) is not None


def module_of(tensor_name: str) -> str:
    return tensor_name.rsplit(".", 1)[0] if "." in tensor_name else tensor_name


def pattern_value(patterns: dict[str, Any], module: str, default: Any, where: str) -> Any:
    """PEFT's lookup: the first pattern key matching the end of the module name (dot-bounded)."""
    for key, value in patterns.items():
        try:
            if re.match(rf"(.*\.)?({key})$", module):
                return value
        except re.error as exc:
            raise CheckpointError(f"{where}: invalid pattern {key!r} ({exc})") from exc
    return default


@dataclass(frozen=True)
class LoraModule:
    """One low-rank module of an adapter: where its factors are, and its scale."""

    module: str
    layout: Layout
    a_key: str
    b_key: str
    rank: int
    scale: float
    rows: int  # stored weight shape
    cols: int

    @property
    def weight_name(self) -> str:
        return f"{self.module}.weight"


@dataclass
class LoraAdapter:
    """An opened adapter: config, low-rank modules and full tensors, read on demand."""

    reference: str
    root: Path
    files: list[Path]
    config: dict[str, Any]
    modules: dict[str, LoraModule]  # by weight name (``<module>.weight``)
    full: dict[str, str]  # checkpoint tensor name -> adapter key, for modules_to_save
    _entries: dict[str, TensorEntry] = field(default_factory=dict, repr=False)
    _pickled: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    def read(self, key: str) -> torch.Tensor:
        entry = self._entries.get(key)
        return read_tensor(entry) if entry is not None else self._pickled[key]

    def factors(self, weight_name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(A, B) of the module whose weight is ``weight_name``, as stored."""
        module = self.modules[weight_name]
        return self.read(module.a_key), self.read(module.b_key)

    def delta(self, weight_name: str) -> torch.Tensor:
        """``scale · B @ A`` in the layout of the stored weight (float32)."""
        module = self.modules[weight_name]
        a, b = self.factors(weight_name)
        return module.layout.delta(a, b, module.scale)

    def shape_of(self, key: str) -> tuple[int, ...]:
        entry = self._entries.get(key)
        return entry.shape if entry is not None else tuple(self._pickled[key].shape)

    @property
    def fan_in_fan_out(self) -> bool:
        return bool(self.config.get("fan_in_fan_out"))


def open_adapter(
    reference: str,
    *,
    search_dirs: tuple[Path, ...] = (),
    allow_pickle: bool = False,
    base_config: dict[str, Any] | None = None,
) -> LoraAdapter:
    """Open a PEFT LoRA adapter directory by headers.

    ``base_config`` (the base model's config.json) tells GPT-2-style Conv1D layers from linear
    ones when the adapter says ``fan_in_fan_out``; without it every linear module of such an
    adapter is taken to be Conv1D.
    """
    root = locate(reference, search_dirs)
    if root.is_file():
        root = root.parent
    config = _read_config(root, reference)
    weights = root / WEIGHTS_FILE
    entries: dict[str, TensorEntry] = {}
    pickled: dict[str, torch.Tensor] = {}
    if weights.exists():
        entries, _ = read_header(weights)
        shapes = {k: e.shape for k, e in entries.items()}
    elif (root / PICKLE_FILE).exists():
        weights = root / PICKLE_FILE
        pickled = load_pickle(weights, allow_pickle)
        shapes = {k: tuple(t.shape) for k, t in pickled.items()}
    else:
        raise CheckpointError(
            f"adapter {reference!r}: no {WEIGHTS_FILE} in {root}",
            "an adapter directory holds adapter_config.json and adapter_model.safetensors",
        )
    modules, full = _index(reference, config, shapes, base_config)
    return LoraAdapter(reference, root, [weights], config, modules, full, entries, pickled)


def _read_config(root: Path, reference: str) -> dict[str, Any]:
    path = root / CONFIG_FILE
    if not path.exists():
        raise CheckpointError(
            f"adapter {reference!r}: no {CONFIG_FILE} in {root}",
            "name a PEFT LoRA adapter directory",
        )
    try:
        config = json.loads(path.read_text())
    except ValueError as exc:
        raise CheckpointError(f"{path}: invalid JSON ({exc})") from exc
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    kind = config.get("peft_type", "LORA")
    if kind != "LORA":
        raise CheckpointError(
            f"adapter {reference!r}: is a {kind} adapter", "only LoRA adapters are supported"
        )
    for key in ("use_dora", "lora_bias"):
        if config.get(key):
            raise CheckpointError(
                f"adapter {reference!r}: {key} adapters are not supported",
                "merge it into its base with PEFT's merge_and_unload() and use the full model",
            )
    return config


def _index(
    reference: str,
    config: dict[str, Any],
    shapes: dict[str, tuple[int, ...]],
    base_config: dict[str, Any] | None,
) -> tuple[dict[str, LoraModule], dict[str, str]]:
    factor_keys: dict[str, dict[str, str]] = {}
    full: dict[str, str] = {}
    for key in shapes:
        if not key.startswith(PREFIX):
            raise CheckpointError(
                f"adapter {reference!r}: key {key!r} does not start with {PREFIX!r}",
                "is this a PEFT adapter saved with save_pretrained()?",
            )
        name = key[len(PREFIX) :]
        match = re.fullmatch(r"(.+)\.(lora_A\.weight|lora_B\.weight|lora_embedding_[AB])", name)
        if match:
            part = "A" if match[2].endswith(("A", "A.weight")) else "B"
            kind = "embedding" if "embedding" in match[2] else "linear"
            factor_keys.setdefault(match[1], {})[part] = key
            factor_keys[match[1]]["kind"] = kind
        elif ".lora_" in name:
            raise CheckpointError(
                f"adapter {reference!r}: unsupported key {key!r}",
                "only lora_A / lora_B / lora_embedding_A / lora_embedding_B and "
                "modules_to_save tensors are supported",
            )
        else:
            full[name.replace(".base_layer.", ".")] = key
    modules: dict[str, LoraModule] = {}
    for module, keys in sorted(factor_keys.items()):
        modules[f"{module}.weight"] = _module(reference, config, module, keys, shapes, base_config)
    return modules, full


def _module(
    reference: str,
    config: dict[str, Any],
    module: str,
    keys: dict[str, str],
    shapes: dict[str, tuple[int, ...]],
    base_config: dict[str, Any] | None,
) -> LoraModule:
    if "A" not in keys or "B" not in keys:
        missing = "A" if "A" not in keys else "B"
        raise CheckpointError(f"adapter {reference!r}: module {module!r} has no lora_{missing}")
    a_shape, b_shape = shapes[keys["A"]], shapes[keys["B"]]
    where = f"adapter {reference!r} ({CONFIG_FILE})"
    rank = int(pattern_value(config.get("rank_pattern") or {}, module, config.get("r", 8), where))
    alpha = float(
        pattern_value(config.get("alpha_pattern") or {}, module, config.get("lora_alpha", 8), where)
    )
    if len(a_shape) != 2 or len(b_shape) != 2 or a_shape[0] != rank or b_shape[1] != rank:
        raise CheckpointError(
            f"adapter {reference!r}: module {module!r} has factors A{list(a_shape)} and "
            f"B{list(b_shape)}, which do not fit rank {rank} from {CONFIG_FILE}",
            "only LoRA on linear and embedding layers is supported; check rank_pattern",
        )
    if keys["kind"] == "embedding":
        layout = Layout.EMBEDDING
    elif config.get("fan_in_fan_out") and (
        base_config is None or is_conv1d(base_config, f"{module}.weight")
    ):
        layout = Layout.CONV1D
    else:
        layout = Layout.LINEAR
    scale = alpha / (rank**0.5 if config.get("use_rslora") else rank)
    rows, cols = (a_shape[1], b_shape[0]) if layout.transposed else (b_shape[0], a_shape[1])
    return LoraModule(module, layout, keys["A"], keys["B"], rank, scale, rows, cols)


def task_type_of(model_config: dict[str, Any]) -> str | None:
    """PEFT's task type for a model: CAUSAL_LM for ``*ForCausalLM`` architectures."""
    architectures = model_config.get("architectures") or ()
    return "CAUSAL_LM" if any(str(a).endswith("ForCausalLM") for a in architectures) else None


def adapter_config(
    *,
    ranks: dict[str, int],
    modules_to_save: list[str],
    base_model: str | None,
    task_type: str | None,
    fan_in_fan_out: bool,
) -> dict[str, Any]:
    """``adapter_config.json`` for modules with the given ranks and scale 1 (alpha = r).

    ``r`` is the most common rank; modules of other ranks are listed by full name in
    ``rank_pattern`` and ``alpha_pattern``.
    """
    common = Counter(ranks.values()).most_common(1)
    r = common[0][0] if common else 8
    pattern = {module: rank for module, rank in sorted(ranks.items()) if rank != r}
    return {
        "peft_type": "LORA",
        "task_type": task_type,
        "base_model_name_or_path": base_model,
        "revision": None,
        "r": r,
        "lora_alpha": r,
        "rank_pattern": pattern,
        "alpha_pattern": dict(pattern),
        "target_modules": sorted(ranks),
        "modules_to_save": sorted(modules_to_save) or None,
        "fan_in_fan_out": fan_in_fan_out,
        "lora_dropout": 0.0,
        "bias": "none",
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
        "inference_mode": True,
        "layers_to_transform": None,
        "layers_pattern": None,
    }
