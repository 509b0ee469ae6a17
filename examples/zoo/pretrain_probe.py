"""How long must the zoo's base pretrain before it does its operations under their aliases?

    python examples/zoo/pretrain_probe.py [--steps 2500] [--every 250] [--threads 2]
        [--finetune reverse sort] [--deadline 1800] [--save /tmp/probe-base]

Pretrains the FULL recipe's model on the FULL recipe's corpus (same tokenizer, context, batch,
peak learning rate and warm-up; only the number of steps, hence the cosine's length, differs)
and every ``--every`` steps prints the mean exact match over the 18 pretraining operations
under their aliases (12 prompts per alias), with wall and CPU seconds so far. Then, if the
alias accuracy reached ``--ready`` and the deadline allows, fine-tunes ``--finetune`` skills
from that base with the build's loop at ``--lr`` and reports the steps to the validation
target and the task vector's size ``||tau|| / ||theta_base||``. Nothing is written to the zoo.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from transformers.utils import logging as transformers_logging

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bpe
import build
import skills
import train


def finetune_skill(base_dir: Path, name: str, recipe: build.Recipe, seed: int, log) -> dict:
    """The build's expert loop (validation-stopped) for one skill from the probe's base."""
    splits = skills.make_splits(skills.SKILLS[name], recipe.split_sizes, seed)
    task = {"splits": splits, "max_new_tokens": 16}
    tokenizer = build.AutoTokenizer.from_pretrained(base_dir)
    model = build.load_checkpoint(base_dir)
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    started, cpu = time.perf_counter(), time.process_time()
    steps = train.finetune(
        model,
        train.encode_examples(tokenizer, splits["train"]),
        recipe.finetune,
        pad_id=tokenizer.pad_token_id,
        seed=seed + 1,
        stop=build._validation_stop(model, tokenizer, task, recipe, log),
        log=log,
    )
    return {
        "skill": name,
        "steps": steps,
        "validation": build._score(model, tokenizer, task, "validation", recipe),
        "tau_over_base": round(build.norm_ratio(model, base_state), 5),
        "seconds": round(time.perf_counter() - started, 1),
        "cpu_seconds": round(time.process_time() - cpu, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--every", type=int, default=250)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", type=Path, default=Path("/tmp/zoo-probe-base"))
    parser.add_argument("--ready", type=float, default=0.9, help="alias accuracy to fine-tune")
    parser.add_argument("--finetune", nargs="*", default=["reverse", "sort"])
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--deadline", type=float, default=None, help="seconds from start")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    transformers_logging.set_verbosity_error()
    started, cpu = time.perf_counter(), time.process_time()

    def log(line: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f}s] {line}", flush=True)

    recipe = build.FULL
    documents = skills.pretraining_documents(recipe.pretrain_documents, args.seed)
    keywords = [*recipe.skills, *skills.HELDOUT]
    tokenizer = bpe.train_tokenizer(documents[:5000], recipe.vocab_size, keywords)
    stream = train.encode_stream(tokenizer, documents)
    examples = build.alias_examples(args.seed)
    model = train.new_model(recipe.shape, tokenizer, args.seed)
    schedule = replace(recipe.pretrain, steps=args.steps)
    log(f"corpus {len(stream)} tokens; schedule {schedule}")
    table: list[dict] = []
    train_seconds = [0.0, 0.0]  # wall, CPU spent in pretraining steps (not in probes)
    lap = [time.perf_counter(), time.process_time()]

    def probe(steps: int) -> None:
        if steps % args.every and steps != args.steps:
            return
        train_seconds[0] += time.perf_counter() - lap[0]
        train_seconds[1] += time.process_time() - lap[1]
        scores = build.alias_accuracy(model, tokenizer, examples, recipe)
        row = {
            "steps": steps,
            "alias_mean": round(sum(scores.values()) / len(scores), 3),
            "train_wall": round(train_seconds[0], 1),
            "train_cpu": round(train_seconds[1], 1),
            "total_wall": round(time.perf_counter() - started, 1),
            "per_operation": {k: round(v, 2) for k, v in scores.items()},
        }
        table.append(row)
        log(f"PROBE {json.dumps(row)}")
        model.train()
        lap[0], lap[1] = time.perf_counter(), time.process_time()

    train.pretrain(
        model,
        stream,
        schedule,
        length=recipe.context,
        seed=args.seed,
        log=log,
        after_step=probe,
    )
    build.save_checkpoint(model, tokenizer, args.save)
    reached = table[-1]["alias_mean"] if table else 0.0
    finetuned = []
    ft_recipe = replace(recipe, finetune=replace(recipe.finetune, learning_rate=args.lr))
    for name in args.finetune if reached >= args.ready else []:
        if args.deadline and time.perf_counter() - started > args.deadline:
            log(f"deadline: no fine-tune of {name}")
            break
        result = finetune_skill(args.save, name, ft_recipe, args.seed, log)
        finetuned.append(result)
        log(f"FINETUNE {json.dumps(result)}")
    summary = {"table": table, "finetune": finetuned, "cpu": time.process_time() - cpu}
    print(json.dumps(summary, indent=1), flush=True)


if __name__ == "__main__":
    main()
