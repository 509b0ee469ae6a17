"""Llama-shaped random checkpoints of a chosen size, written fast (no transformers init).

A base plus fine-tunes (base + small seeded noise), sharded bf16 safetensors with an index and
a config.json that transformers loads, so both alloykit and mergekit can merge them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import save_file

SHAPES = {  # hidden, intermediate, layers, heads, kv heads, vocab
    "tiny": (64, 160, 2, 4, 2, 512),  # for smoke tests
    "56M": (512, 1408, 8, 8, 4, 32000),  # whole-matrix methods' memory (benchmarks/README.md)
    "0.1B": (768, 2048, 12, 12, 4, 32000),
    "0.5B": (1024, 2816, 24, 16, 8, 32000),
    "1.1B": (2048, 5632, 22, 32, 4, 32000),
}


def llama_config(size: str) -> dict:
    hidden, inter, layers, heads, kv, vocab = SHAPES[size]
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "vocab_size": vocab,
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
    }


def tensor_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    hidden, inter = config["hidden_size"], config["intermediate_size"]
    head_dim = hidden // config["num_attention_heads"]
    kv = config["num_key_value_heads"] * head_dim
    shapes: dict[str, tuple[int, ...]] = {
        "model.embed_tokens.weight": (config["vocab_size"], hidden)
    }
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes[p + "input_layernorm.weight"] = (hidden,)
        shapes[p + "post_attention_layernorm.weight"] = (hidden,)
        shapes[p + "self_attn.q_proj.weight"] = (hidden, hidden)
        shapes[p + "self_attn.k_proj.weight"] = (kv, hidden)
        shapes[p + "self_attn.v_proj.weight"] = (kv, hidden)
        shapes[p + "self_attn.o_proj.weight"] = (hidden, hidden)
        shapes[p + "mlp.gate_proj.weight"] = (inter, hidden)
        shapes[p + "mlp.up_proj.weight"] = (inter, hidden)
        shapes[p + "mlp.down_proj.weight"] = (hidden, inter)
    shapes["model.norm.weight"] = (hidden,)
    shapes["lm_head.weight"] = (config["vocab_size"], hidden)
    return shapes


def write_model(
    directory: Path, config: dict, seed: int, base: Path | None, shard_bytes: int
) -> None:
    """Write one checkpoint; with ``base``, a fine-tune = base + 1% seeded noise."""
    directory.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    base_tensors: dict[str, torch.Tensor] = {}
    if base is not None:
        from safetensors.torch import load_file

        for path in sorted(base.glob("*.safetensors")):
            base_tensors.update(load_file(path))
    for name, shape in tensor_shapes(config).items():
        if name in base_tensors:
            ref = base_tensors[name].float()
            tensor = ref + torch.randn(shape, generator=generator) * 0.01 * ref.std()
        elif name.endswith("norm.weight"):
            tensor = torch.ones(shape) + 0.01 * torch.randn(shape, generator=generator)
        else:
            tensor = torch.randn(shape, generator=generator) * 0.02
        tensor = tensor.to(torch.bfloat16)
        if size + tensor.numel() * 2 > shard_bytes and shards[-1]:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += tensor.numel() * 2
    weight_map = {}
    total = 0
    for i, shard in enumerate(shards):
        file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, directory / file, metadata={"format": "pt"})
        for name, tensor in shard.items():
            weight_map[name] = file
            total += tensor.numel() * 2
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))
    (directory / "config.json").write_text(json.dumps(config, indent=2))


def build(
    root: Path, size: str, finetunes: int = 3, shard_bytes: int = 1_000_000_000
) -> dict[str, Path]:
    """Build (once) base + ``finetunes`` fine-tunes of ``size`` under ``root/size``."""
    config = llama_config(size)
    home = root / size
    models = {"base": home / "base", **{f"ft{i}": home / f"ft{i}" for i in range(1, finetunes + 1)}}
    done = home / ".complete"
    if done.exists():
        return models
    write_model(models["base"], config, seed=0, base=None, shard_bytes=shard_bytes)
    for i in range(1, finetunes + 1):
        write_model(models[f"ft{i}"], config, seed=i, base=models["base"], shard_bytes=shard_bytes)
    done.write_text("ok")
    return models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("root", type=Path)
    parser.add_argument("--size", choices=sorted(SHAPES), default="1.1B")
    parser.add_argument("--finetunes", type=int, default=3)
    args = parser.parse_args()
    for name, path in build(args.root, args.size, args.finetunes).items():
        print(name, path)


if __name__ == "__main__":
    main()
