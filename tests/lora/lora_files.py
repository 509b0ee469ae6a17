"""Reading the models and adapters the tests write, and making edited copies of models."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

Tensors = dict[str, torch.Tensor]


def read_model(directory: Path) -> Tensors:
    tensors: Tensors = {}
    for path in sorted(Path(directory).glob("*.safetensors")):
        tensors.update(load_file(path))
    return tensors


def read_adapter(directory: Path) -> tuple[dict[str, Any], Tensors]:
    config = json.loads((Path(directory) / "adapter_config.json").read_text())
    return config, load_file(Path(directory) / "adapter_model.safetensors")


def adapter_delta(config: dict[str, Any], tensors: Tensors, module: str) -> torch.Tensor:
    """``alpha/r · B @ A`` of a linear module, from the files alone."""
    rank = config["rank_pattern"].get(module, config["r"])
    alpha = config["alpha_pattern"].get(module, config["lora_alpha"])
    a = tensors[f"base_model.model.{module}.lora_A.weight"].double()
    b = tensors[f"base_model.model.{module}.lora_B.weight"].double()
    assert a.shape[0] == rank == b.shape[1]
    return (b @ a) * (alpha / rank)


def variant(source: Path, directory: Path, edit: Callable[[Tensors], Tensors]) -> Path:
    """A copy of model ``source`` whose tensors went through ``edit``."""
    shutil.copytree(source, directory)
    weights = directory / "model.safetensors"
    save_file(edit(load_file(weights)), weights, metadata={"format": "pt"})
    return directory


def with_changed_norm(tensors: Tensors) -> Tensors:
    """The fine-tunes' norms are all ones (left unchanged): change one, as training would."""
    changed = dict(tensors)
    name = "model.layers.1.input_layernorm.weight"
    changed[name] = tensors[name] + 0.01 * torch.arange(tensors[name].numel())
    return changed
