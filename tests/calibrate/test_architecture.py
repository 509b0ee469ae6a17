"""The Gram hooks map nn.Linear weights to checkpoint names, and refuse what they cannot map."""

from __future__ import annotations

import pytest
from torch import nn

from alloykit.calibrate import ArchitectureError
from alloykit.calibrate.recorder import linear_weights


def test_gpt2_conv1d_weights_are_refused_by_name(tmp_path) -> None:
    from transformers import AutoModelForCausalLM

    from alloykit.tiny_models import build_config

    model = AutoModelForCausalLM.from_config(build_config("gpt2"))
    stored = [name for name, _ in model.named_parameters()]
    with pytest.raises(ArchitectureError, match=r"transformer\.h\.0\.attn\.c_attn\.weight"):
        linear_weights(model, stored, "tiny-gpt2")


def test_a_model_without_linear_layers_is_refused() -> None:
    model = nn.Sequential(nn.Embedding(4, 3), nn.LayerNorm(3))
    stored = [name for name, _ in model.named_parameters()]
    with pytest.raises(ArchitectureError, match=r"no torch\.nn\.Linear weight"):
        linear_weights(model, stored, "toy")


def test_linear_weights_are_named_as_stored() -> None:
    model = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 2))
    found = linear_weights(model, ["0.weight", "0.bias"], "toy")
    assert found == {"0.weight": model[0]}
