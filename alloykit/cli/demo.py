"""``alloykit demo``: the main job on small models the project builds itself.

Until the example zoo exists, this builds a tiny Llama-style base and three seeded
fine-tunes, merges them with TIES, and checks the result loads and gives finite logits.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import yaml
from rich.console import Console


def run_demo(workdir: Path, console: Console) -> Path:
    import torch
    from transformers import AutoModelForCausalLM

    from alloykit.api import merge
    from alloykit.tiny_models import build_family

    workdir = workdir.absolute()
    models_dir = workdir / "models"
    if not (models_dir / "ft3" / "config.json").exists():
        console.print(f"building example models in {models_dir}")
        shutil.rmtree(models_dir, ignore_errors=True)
        build_family("llama", models_dir, finetunes=3, seed=0)
    recipe = {
        "merge_method": "ties",
        "base_model": str(models_dir / "base"),
        "models": [
            {"model": str(models_dir / f"ft{i}"), "parameters": {"weight": 1.0, "density": 0.5}}
            for i in (1, 2, 3)
        ],
        "parameters": {"normalize": True},
        "dtype": "float32",
    }
    recipe_path = workdir / "ties.yml"
    recipe_path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    out = workdir / "merged"
    console.print(f"merging with recipe {recipe_path}")
    start = time.perf_counter()
    merge(recipe_path, out, force=True)
    elapsed = time.perf_counter() - start
    model = AutoModelForCausalLM.from_pretrained(out)
    with torch.no_grad():
        logits = model(torch.arange(8).unsqueeze(0)).logits
    finite = bool(torch.isfinite(logits).all())
    console.print(
        f"merged model in {out} ({elapsed:.2f} s); loads with AutoModelForCausalLM; "
        f"logits finite: {finite}"
    )
    if not finite:
        raise RuntimeError("merged model produced non-finite logits")
    return out
