"""The dense side of an MoE: each layer's MLP in the base model, and experts that match it."""

from __future__ import annotations

from dataclasses import dataclass

from alloykit.arch.layers import count_layers, parse_layer_name
from alloykit.checkpoint.source import ModelSource
from alloykit.compose.formats import PROJECTIONS


@dataclass(frozen=True)
class DenseMlp:
    """One layer's MLP: its tensor names by projection (gate_proj, up_proj, down_proj)."""

    prefix: str  # "model.layers.3."
    names: dict[str, str]

    @property
    def module(self) -> str:
        return self.prefix + "mlp"


def dense_mlps(base: ModelSource) -> list[DenseMlp]:
    """Every layer's MLP; ``ValueError`` saying why when a layer has no Llama-style MLP."""
    layers: dict[int, dict[str, str]] = {}
    prefixes: dict[int, str] = {}
    for name in base.tensors:
        layer = parse_layer_name(name)
        if layer is None or not layer.rest.startswith("mlp."):
            continue
        projection = layer.rest.removeprefix("mlp.").removesuffix(".weight")
        if projection not in PROJECTIONS or not layer.rest.endswith(".weight"):
            raise ValueError(
                f"tensor {name!r}: only gate/up/down projections without biases can become experts"
            )
        layers.setdefault(layer.index, {})[projection] = name
        prefixes[layer.index] = f"{layer.prefix}{layer.index}."
    for index in range(count_layers(base.config, base.tensors)):
        missing = [p for p in PROJECTIONS if p not in layers.get(index, {})]
        if missing:
            raise ValueError(f"model {base.reference!r}: layer {index} has no MLP {missing[0]}")
    return [DenseMlp(prefixes[i], layers[i]) for i in sorted(layers)]


def expert_mismatch(base: ModelSource, expert: ModelSource, mlps: list[DenseMlp]) -> str | None:
    """Why ``expert`` cannot be an expert of ``base``'s MoE, or None when it can."""
    mine, theirs = base.config.get("model_type"), expert.config.get("model_type")
    if theirs != mine:
        return f"model {expert.reference!r} is a {theirs}, the base model a {mine}"
    for mlp in mlps:
        for name in mlp.names.values():
            want, have = base.tensors[name], expert.tensors.get(name)
            if have is None or have.shape != want.shape:
                found = "missing" if have is None else f"shaped {list(have.shape)}"
                return (
                    f"tensor {name!r} of model {expert.reference!r} is {found}, the base model's "
                    f"is {list(want.shape)}"
                )
    return None
