"""Rebuild the example zoo: tokenizer, tasks, a pretrained base, one expert per skill, scores.

    python examples/zoo/build.py [--out examples/zoo] [--seed 0] [--quick]

Everything is drawn from ``--seed``: the same seed gives the same data and, up to
floating-point noise, the same models and scores. ``--quick`` builds a tiny zoo in seconds
(a smoke test of the pipeline; its models learn nothing).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads must not spin

import argparse
import json
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM
from transformers.utils import logging as transformers_logging

from alloykit.evaluate import exact_match

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bpe
import corpus
import skills
import train


@dataclass(frozen=True)
class Recipe:
    shape: train.ModelShape
    vocab_size: int
    corpus_modules: int | None
    format_documents: int
    context: int
    pretrain: train.Schedule
    finetune: train.Schedule
    corpus_rows: int
    corpus_weight: float
    split_sizes: dict[str, int]
    check_every: int
    target: float
    skills: tuple[str, ...] = (
        "translate",
        "reverse",
        "swapcase",
        "largest",
        "sort",
        "successor",
        "double",
        "rotate",
    )
    averaged: int = 4
    eval_batch_size: int = 64


FULL = Recipe(
    shape=train.ModelShape(hidden=128, layers=4, heads=4, kv_heads=4, intermediate=384),
    vocab_size=1024,
    corpus_modules=None,
    format_documents=400,
    context=128,
    pretrain=train.Schedule(steps=400, batch_size=32, learning_rate=2e-3, warmup=40),
    finetune=train.Schedule(steps=400, batch_size=32, learning_rate=1e-3, warmup=20),
    corpus_rows=8,
    corpus_weight=0.5,
    split_sizes={"train": 4000, "validation": 200, "test": 250},
    check_every=25,
    target=0.97,
)

QUICK = Recipe(
    shape=train.ModelShape(hidden=32, layers=2, heads=2, kv_heads=2, intermediate=64),
    vocab_size=320,
    corpus_modules=8,
    format_documents=10,
    context=32,
    pretrain=train.Schedule(steps=5, batch_size=4, learning_rate=1e-3, warmup=1),
    finetune=train.Schedule(steps=3, batch_size=4, learning_rate=1e-3, warmup=1),
    corpus_rows=2,
    corpus_weight=0.5,
    split_sizes={"train": 16, "validation": 4, "test": 8},
    check_every=2,
    target=0.97,
)


def write_tasks(root: Path, recipe: Recipe, tokenizer, seed: int) -> dict[str, dict]:
    """tasks/<skill>/{train,validation,test}.jsonl and task.yaml; returns the splits."""
    data = {}
    for name in recipe.skills:
        splits = skills.make_splits(skills.SKILLS[name], recipe.split_sizes, seed)
        directory = root / name
        directory.mkdir(parents=True, exist_ok=True)
        for split, examples in splits.items():
            lines = "".join(json.dumps(example) + "\n" for example in examples)
            (directory / f"{split}.jsonl").write_text(lines)
        every = [example for examples in splits.values() for example in examples]
        longest = max(len(pair[1]) for pair in train.encode_examples(tokenizer, every))
        task = {
            "name": name,
            "type": "generation",
            "data": {split: f"{split}.jsonl" for split in splits},
            "max_new_tokens": longest + 2,
            "description": skills.SKILLS[name].description,
        }
        (directory / "task.yaml").write_text(yaml.safe_dump(task, sort_keys=False))
        data[name] = {"splits": splits, "max_new_tokens": task["max_new_tokens"]}
    return data


def save_checkpoint(model, tokenizer, directory: Path) -> None:
    """float32 weights in safetensors, with the tokenizer beside them."""
    model.save_pretrained(directory)
    bpe.save_tokenizer(tokenizer, directory)


def load_checkpoint(directory: Path):
    return AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()


def linear_average(directories: list[Path], template: Path):
    """The per-tensor mean of the experts' weights (read with safetensors), in a base model."""
    total: dict[str, torch.Tensor] = {}
    for directory in directories:
        for name, tensor in load_file(directory / "model.safetensors").items():
            total[name] = total.get(name, 0) + tensor.float() / len(directories)
    model = load_checkpoint(template)
    model.load_state_dict(total)
    return model


def _validation_stop(model, tokenizer, task: dict, recipe: Recipe, log):
    """Every ``check_every`` steps: stop once validation exact match reaches the target."""

    def stop(step: int) -> bool:
        if step % recipe.check_every:
            return False
        accuracy = _score(model, tokenizer, task, "validation", recipe)
        log(f"step {step}: validation exact match {accuracy:.3f}")
        return accuracy >= recipe.target

    return stop


def _score(model, tokenizer, task: dict, split: str, recipe: Recipe) -> float:
    return exact_match(
        model,
        tokenizer,
        task["splits"][split],
        max_new_tokens=task["max_new_tokens"],
        batch_size=recipe.eval_batch_size,
    )


def train_experts(out: Path, recipe: Recipe, tokenizer, data, stream, seed: int, lap, log):
    """One expert per skill, each fine-tuned from the saved base; returns the steps each took."""
    steps = {}
    for index, name in enumerate(recipe.skills):
        model = load_checkpoint(out / "base")

        def prefixed(line: str, name: str = name) -> None:
            log(f"{name}: {line}")

        steps[name] = train.finetune(
            model,
            train.encode_examples(tokenizer, data[name]["splits"]["train"]),
            stream,
            recipe.finetune,
            pad_id=tokenizer.pad_token_id,
            corpus_rows=recipe.corpus_rows,
            corpus_weight=recipe.corpus_weight,
            seed=seed + 1 + index,
            stop=_validation_stop(model, tokenizer, data[name], recipe, prefixed),
            log=prefixed,
        )
        save_checkpoint(model, tokenizer, out / "experts" / name)
        lap(f"finetune {name}")
    return steps


def score_zoo(out: Path, recipe: Recipe, tokenizer, data) -> tuple[dict, dict]:
    """Test exact match of the base, each expert and the linear average, on every skill."""

    def row(model) -> dict[str, float]:
        return {
            name: _score(model, tokenizer, data[name], "test", recipe) for name in recipe.skills
        }

    models = {"base": out / "base"} | {name: out / "experts" / name for name in recipe.skills}
    scores = {label: row(load_checkpoint(path)) for label, path in models.items()}
    averaged = list(recipe.skills[: recipe.averaged])
    average = linear_average([models[name] for name in averaged], out / "base")
    return scores, {"experts": averaged, "scores": row(average)}


def build(out: Path, recipe: Recipe, seed: int, log=print) -> dict:
    """Write the zoo under ``out`` (replacing base/, experts/, tasks/) and its scores.json."""
    started = time.perf_counter()
    timings: dict[str, float] = {}
    mark = started

    def lap(phase: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        timings[phase] = round(now - mark, 1)
        mark = now
        log(f"[{phase}] {timings[phase]:.1f}s")

    for stale in ("base", "experts", "tasks"):
        shutil.rmtree(out / stale, ignore_errors=True)
    documents = corpus.documents(recipe.corpus_modules)
    documents += corpus.format_documents(recipe.format_documents, seed)
    random.Random(seed).shuffle(documents)
    tokenizer = bpe.train_tokenizer(documents, recipe.vocab_size)
    data = write_tasks(out / "tasks", recipe, tokenizer, seed)
    stream = train.encode_stream(tokenizer, documents)
    log(f"corpus: {len(documents)} documents, {len(stream)} tokens")
    lap("data")

    base = train.new_model(recipe.shape, tokenizer, seed)
    log(f"base: {sum(p.numel() for p in base.parameters()) / 1e6:.2f}M parameters")
    train.pretrain(base, stream, recipe.pretrain, length=recipe.context, seed=seed, log=log)
    save_checkpoint(base, tokenizer, out / "base")
    lap("pretrain")

    steps = train_experts(out, recipe, tokenizer, data, stream, seed, lap, log)
    scores, average = score_zoo(out, recipe, tokenizer, data)
    lap("evaluate")
    timings["total"] = round(time.perf_counter() - started, 1)
    timings["total_cpu"] = round(time.process_time(), 1)
    result = {
        "seed": seed,
        "split": "test",
        "metric": "exact match of the greedy answer, cut at the first newline, stripped",
        "test_examples": {name: len(data[name]["splits"]["test"]) for name in recipe.skills},
        "scores": scores,
        "linear_average": average,
        "finetune_steps": steps,
        "recipe": asdict(recipe),
        "seconds": timings,
    }
    (out / "scores.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a tiny zoo for a smoke test")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    args.out.mkdir(parents=True, exist_ok=True)
    result = build(
        args.out, QUICK if args.quick else FULL, args.seed, log=lambda line: print(line, flush=True)
    )
    for label, row in [*result["scores"].items(), ("average", result["linear_average"]["scores"])]:
        print(f"{label:>12} " + " ".join(f"{k}={v:.2f}" for k, v in row.items()))


if __name__ == "__main__":
    main()
