"""Tiny random checkpoints of common families, built offline with transformers.

Used by the test-suite and ``alloykit demo``: a "base" plus "fine-tunes" that are the base
with small seeded perturbations, saved as real Hugging Face model directories.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import torch

FAMILIES: dict[str, dict[str, Any]] = {
    "llama": {
        "model_type": "llama",
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 128,
        "max_position_embeddings": 64,
        "tie_word_embeddings": False,
    },
    "qwen2": {
        "model_type": "qwen2",
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 128,
        "max_position_embeddings": 64,
        "tie_word_embeddings": False,
    },
    "gemma": {
        "model_type": "gemma",
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 1,
        "head_dim": 8,
        "vocab_size": 128,
        "max_position_embeddings": 64,
        "tie_word_embeddings": True,
    },
    "mistral": {
        "model_type": "mistral",
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 128,
        "max_position_embeddings": 64,
    },
    "qwen3": {
        "model_type": "qwen3",
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 8,
        "vocab_size": 128,
        "max_position_embeddings": 64,
        "tie_word_embeddings": False,
    },
    "phi3": {
        "model_type": "phi3",
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "vocab_size": 128,
        "max_position_embeddings": 64,
        "pad_token_id": 0,
    },
    "gemma2": {
        "model_type": "gemma2",
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 8,
        "vocab_size": 128,
        "max_position_embeddings": 64,
        "sliding_window": 16,
    },
    "granite": {
        "model_type": "granite",
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 128,
        "max_position_embeddings": 64,
        "tie_word_embeddings": False,
    },
    "gpt2": {
        "model_type": "gpt2",
        "n_embd": 32,
        "n_layer": 4,
        "n_head": 4,
        "vocab_size": 128,
        "n_positions": 64,
        "tie_word_embeddings": True,
    },
}


def build_config(family: str, **overrides: Any):
    from transformers import AutoConfig

    settings = dict(FAMILIES[family])
    settings.update(overrides)
    model_type = settings.pop("model_type")
    return AutoConfig.for_model(model_type, **settings)


def build_model(
    family: str,
    directory: Path,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    **overrides: Any,
) -> Path:
    """Save a randomly initialised model of ``family`` into ``directory``."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(build_config(family, **overrides))
    model = model.to(dtype)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory, safe_serialization=True)
    return directory


_TEXT_SETTINGS = {
    key: value
    for key, value in FAMILIES["llama"].items()
    if key not in ("model_type", "tie_word_embeddings")
}
MULTIMODAL: dict[str, dict[str, Any]] = {
    "llava": {
        "text_config": {"model_type": "llama", **_TEXT_SETTINGS},
        "vision_config": {
            "model_type": "clip_vision_model",
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": 28,
            "patch_size": 14,
        },
        "image_token_index": 127,
    },
    "qwen2_vl": {
        "text_config": {
            **_TEXT_SETTINGS,
            "rope_scaling": {"type": "mrope", "mrope_section": [1, 1, 2]},
        },
        "vision_config": {
            "depth": 2,
            "embed_dim": 32,
            "hidden_size": 32,
            "num_heads": 4,
            "mlp_ratio": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
        },
        "vocab_size": 128,
    },
    "mistral3": {
        "text_config": {"model_type": "mistral", **_TEXT_SETTINGS},
        "vision_config": {
            "model_type": "pixtral",
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "head_dim": 8,
            "image_size": 28,
            "patch_size": 14,
        },
        "image_token_index": 127,
        "spatial_merge_size": 2,
    },
}
"""Vision-language families: the tiny llama as text decoder, a two-layer vision tower."""


def build_multimodal(model_type: str, directory: Path, *, seed: int = 0) -> Path:
    """Save a randomly initialised vision-language model (``MULTIMODAL``) into ``directory``."""
    import transformers

    config = transformers.AutoConfig.for_model(model_type, **MULTIMODAL[model_type])
    model_class = {
        "llava": transformers.LlavaForConditionalGeneration,
        "qwen2_vl": transformers.Qwen2VLForConditionalGeneration,
        "mistral3": transformers.Mistral3ForConditionalGeneration,
    }[model_type]
    torch.manual_seed(seed)
    directory.mkdir(parents=True, exist_ok=True)
    model_class(config).save_pretrained(directory, safe_serialization=True)
    return directory


def build_finetune(base_dir: Path, directory: Path, *, seed: int, scale: float = 0.02) -> Path:
    """A "fine-tune" of ``base_dir``: every float tensor plus seeded noise of relative ``scale``."""
    from safetensors.torch import load_file, save_file

    directory.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    for path in base_dir.iterdir():
        if path.suffix == ".safetensors":
            tensors = load_file(path)
            for name, tensor in tensors.items():
                if tensor.dtype.is_floating_point:
                    noise = torch.randn(tensor.shape, generator=generator) * scale
                    spread = tensor.float().std() if tensor.numel() > 1 else torch.tensor(1.0)
                    tensors[name] = (tensor.float() + noise * spread).to(tensor.dtype)
            save_file(tensors, directory / path.name, metadata={"format": "pt"})
        elif path.is_file():
            (directory / path.name).write_bytes(path.read_bytes())
    return directory


def build_family(
    family: str, root: Path, *, finetunes: int = 2, seed: int = 0, **overrides: Any
) -> dict[str, Path]:
    """A base and ``finetunes`` fine-tunes of one family under ``root``."""
    base = build_model(family, root / "base", seed=seed, **overrides)
    models = {"base": base}
    for index in range(finetunes):
        models[f"ft{index + 1}"] = build_finetune(
            base, root / f"ft{index + 1}", seed=seed + 100 + index
        )
    return models


CHARACTERS = string.ascii_lowercase + string.digits + " \n.,:;?!+-=()'\""


def build_char_tokenizer(directory: Path):
    """A character-level tokenizer (one token per character) that adds BOS, as llama's does,
    saved into ``directory`` (beside a tiny model, it makes a model directory that generates)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    vocab = {token: index for index, token in enumerate(specials + list(CHARACTERS))}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", vocab["<s>"])]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
    )
    fast.save_pretrained(directory)
    return fast
