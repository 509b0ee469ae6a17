"""``from_pretrained`` stays local: Hub kernels are off wherever transformers has them."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM, PreTrainedModel

from alloykit.checkpoint.transformers_loading import local_load_options

ZOO_BASE = Path(__file__).resolve().parents[2] / "examples" / "zoo" / "base"


def test_kernels_are_turned_off_only_where_transformers_knows_the_option() -> None:
    expected = {"use_kernels": False} if hasattr(PreTrainedModel, "set_use_kernels") else {}
    assert local_load_options() == expected


@pytest.mark.skipif(not (ZOO_BASE / "model.safetensors").is_file(), reason="zoo not built")
def test_a_model_loaded_with_them_uses_no_kernels_even_on_the_meta_device() -> None:
    """transformers 5.25 kernelizes by default and refuses the meta device while doing so;
    with these options both loads succeed and nothing is kernelized."""
    for device_map in (None, "meta"):
        model = AutoModelForCausalLM.from_pretrained(
            ZOO_BASE, device_map=device_map, **local_load_options()
        )
        assert not getattr(model, "use_kernels", False)
