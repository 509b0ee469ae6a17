"""Layer slicing writes every layer count a config keeps, and an output whose config and
tensors disagree is refused before it is committed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

import alloykit
from alloykit.checkpoint.load_check import check_loads
from alloykit.cli import app
from alloykit.errors import OutputMismatchError
from alloykit.tiny_models import FAMILIES, build_multimodal

TEXT = {
    key: value
    for key, value in FAMILIES["llama"].items()
    if key not in ("model_type", "tie_word_embeddings")
}
# layer_range [0, 3] then [1, 4]: six output layers from a four-layer model
STACKED_SOURCE_LAYERS = [0, 1, 2, 1, 2, 3]


def build(directory: Path, model_type: str, **settings: object) -> Path:
    import transformers

    config = transformers.AutoConfig.for_model(model_type, **settings)
    torch.manual_seed(0)
    model_class = getattr(transformers, config.architectures[0]) if config.architectures else None
    if model_class is None:
        model_class = {
            "t5": transformers.T5ForConditionalGeneration,
            "gemma2": transformers.Gemma2ForCausalLM,
        }[model_type]
    model_class(config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("multimodal")
    return {
        "llava": build_multimodal("llava", root / "llava"),
        "qwen2_vl": build_multimodal("qwen2_vl", root / "qwen2_vl"),
        "t5": build(
            root / "t5",
            "t5",
            d_model=32,
            d_ff=64,
            d_kv=8,
            num_layers=4,
            num_decoder_layers=4,
            num_heads=4,
            vocab_size=128,
        ),
        "gemma2": build(root / "gemma2", "gemma2", head_dim=8, **TEXT),
    }


def stack(model: Path, out: Path) -> Path:
    recipe = {
        "merge_method": "passthrough",
        "slices": [
            {"sources": [{"model": str(model), "layer_range": [0, 3]}]},
            {"sources": [{"model": str(model), "layer_range": [1, 4]}]},
        ],
    }
    return alloykit.merge(recipe, out)


def config_of(directory: Path) -> dict:
    return json.loads((directory / "config.json").read_text())


def tensors(directory: Path) -> dict[str, torch.Tensor]:
    return {k: v for f in sorted(directory.glob("*.safetensors")) for k, v in load_file(f).items()}


def loading_report(directory: Path) -> dict[str, list]:
    import transformers

    model_class = getattr(transformers, config_of(directory)["architectures"][0])
    _, report = model_class.from_pretrained(directory, output_loading_info=True)
    return {key: list(value) for key, value in report.items() if value}


@pytest.mark.parametrize("model_type", ["llava", "qwen2_vl"])
def test_stacking_a_multimodal_model_updates_text_config_and_loads(tiny, tmp_path, model_type):
    out = stack(tiny[model_type], tmp_path / "out")
    config = config_of(out)
    assert config["text_config"]["num_hidden_layers"] == 6
    assert loading_report(out) == {}


@pytest.mark.parametrize("model_type", ["llava", "qwen2_vl"])
def test_stacking_takes_the_vision_tower_whole(tiny, tmp_path, model_type):
    out = stack(tiny[model_type], tmp_path / "out")
    source, merged = tensors(tiny[model_type]), tensors(out)
    tower = [n for n in source if "vision" in n or "visual" in n]
    assert tower
    assert all(torch.equal(source[n], merged[n]) for n in tower)


def test_stacking_t5_updates_encoder_and_decoder_counts_and_loads(tiny, tmp_path):
    out = stack(tiny["t5"], tmp_path / "out")
    config = config_of(out)
    assert (config["num_layers"], config["num_decoder_layers"]) == (6, 6)
    assert loading_report(out) == {}


def test_layer_types_follow_the_slices(tiny, tmp_path):
    source_types = config_of(tiny["gemma2"])["layer_types"]
    out = stack(tiny["gemma2"], tmp_path / "out")
    assert config_of(out)["layer_types"] == [source_types[i] for i in STACKED_SOURCE_LAYERS]
    assert loading_report(out) == {}


def test_nested_layer_types_follow_the_slices(tiny, tmp_path):
    source_types = config_of(tiny["qwen2_vl"])["text_config"]["layer_types"]
    out = stack(tiny["qwen2_vl"], tmp_path / "out")
    written = config_of(out)["text_config"]["layer_types"]
    assert written == [source_types[i] for i in STACKED_SOURCE_LAYERS]


def test_the_input_config_is_not_changed_by_planning(tiny):
    before = config_of(tiny["llava"])
    recipe = {
        "merge_method": "passthrough",
        "slices": [{"sources": [{"model": str(tiny["llava"]), "layer_range": [0, 2]}]}],
    }
    the_plan = alloykit.plan(recipe)
    assert the_plan.config["text_config"]["num_hidden_layers"] == 2
    assert the_plan.sources[str(tiny["llava"])].config["text_config"]["num_hidden_layers"] == 4
    assert config_of(tiny["llava"]) == before


def test_check_loads_names_missing_and_unexpected_keys(tiny, tmp_path):
    out = stack(tiny["t5"], tmp_path / "out")
    config = config_of(out)
    config["num_decoder_layers"] = 4
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(OutputMismatchError) as caught:
        check_loads(out)
    assert caught.value.exit_code == 1
    assert "unexpected (decoder.block.4." in caught.value.message


def test_check_loads_leaves_configs_with_remote_code_alone(tiny, tmp_path):
    out = stack(tiny["t5"], tmp_path / "out")
    config = config_of(out) | {"auto_map": {"AutoModel": "custom.Model"}, "num_layers": 2}
    (out / "config.json").write_text(json.dumps(config))
    check_loads(out)


def test_a_config_the_tensors_disagree_with_is_refused_before_commit(tiny, tmp_path, monkeypatch):
    import alloykit.planner.builder

    monkeypatch.setattr(alloykit.planner.builder, "set_layer_count", lambda config, count: None)
    recipe_path = tmp_path / "stack.yml"
    recipe_path.write_text(
        yaml.safe_dump(
            {
                "merge_method": "passthrough",
                "slices": [
                    {"sources": [{"model": str(tiny["t5"]), "layer_range": [0, 3]}]},
                    {"sources": [{"model": str(tiny["t5"]), "layer_range": [1, 4]}]},
                ],
            }
        )
    )
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["merge", str(recipe_path), str(out)])
    assert result.exit_code == 1
    assert "config.json and tensors disagree" in result.stderr
    assert "decoder.block.4" in result.stderr
    assert not out.exists()
    assert not out.with_name("out.partial").exists()
    unchecked = CliRunner().invoke(app, ["merge", str(recipe_path), str(out), "--no-check-loads"])
    assert unchecked.exit_code == 0, unchecked.output


def test_only_outputs_that_change_the_reference_layout_are_checked(llama):
    from alloykit.checkpoint.load_check import changes_layout

    whole = {"merge_method": "linear", "models": [str(llama["ft1"]), str(llama["ft2"])]}
    sliced = {
        "merge_method": "passthrough",
        "slices": [{"sources": [{"model": str(llama["ft1"]), "layer_range": [0, 2]}]}],
    }
    assert not changes_layout(alloykit.plan(whole))
    assert not changes_layout(alloykit.plan(whole, out_dtype="bfloat16"))
    assert changes_layout(alloykit.plan(sliced))
