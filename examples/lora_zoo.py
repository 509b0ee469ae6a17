"""How small can a LoRA adapter of a zoo expert be? Extract, apply, score, over a grid of ranks.

    python examples/lora_zoo.py [--zoo examples/zoo] [--skill add] [--ranks 1,2,4,8,16,32,64]

For one expert of the example zoo (``examples/zoo/experts/<skill>``, fine-tuned from
``examples/zoo/base``) this extracts a rank-r adapter for each r of the grid, bakes it into the
base with ``alloykit lora apply``, and scores the result on the skill's test split with greedy
exact match, next to the expert's and the base's own scores. It reports the smallest r that
keeps at least ``--keep`` (95%) of the expert's score.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads must not spin

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from alloykit.checkpoint.transformers_loading import local_load_options
from alloykit.evaluate import exact_match
from alloykit.lora import ExtractOptions, apply_adapter, extract_adapter
from alloykit.lora.report import Capture, overall_error


def load_task(zoo: Path, skill: str, split: str, limit: int | None) -> tuple[list[dict], int]:
    directory = zoo / "tasks" / skill
    task = yaml.safe_load((directory / "task.yaml").read_text())
    lines = (directory / task["data"][split]).read_text().splitlines()
    examples = [json.loads(line) for line in lines if line.strip()]
    return examples[:limit] if limit else examples, int(task["max_new_tokens"])


def score(directory: Path, examples: list[dict], max_new_tokens: int) -> float:
    model = AutoModelForCausalLM.from_pretrained(
        directory, dtype=torch.float32, **local_load_options()
    ).eval()
    tokenizer = AutoTokenizer.from_pretrained(directory)
    return exact_match(model, tokenizer, examples, max_new_tokens=max_new_tokens)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--zoo", type=Path, default=Path(__file__).parent / "zoo")
    parser.add_argument("--skill", default="add")
    parser.add_argument("--ranks", default="1,2,4,8,16,32,64")
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=None, help="score only this many examples")
    parser.add_argument("--keep", type=float, default=0.95, help="share of the expert's score")
    parser.add_argument("--embeddings", default="low-rank", choices=["low-rank", "full"])
    parser.add_argument("--save-unfactorable", action="store_true")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)

    base, expert = args.zoo / "base", args.zoo / "experts" / args.skill
    for path in (base, expert, args.zoo / "tasks" / args.skill):
        if not path.exists():
            raise SystemExit(f"{path} is missing: build the zoo first (examples/zoo/build.py)")
    examples, max_new_tokens = load_task(args.zoo, args.skill, args.split, args.limit)
    base_score = score(base, examples, max_new_tokens)
    expert_score = score(expert, examples, max_new_tokens)
    print(f"skill {args.skill}, {len(examples)} {args.split} examples")
    print(f"base   exact match {base_score:.3f}")
    print(f"expert exact match {expert_score:.3f}")
    header = ("rank", "score", "of expert", "rel. error", "not captured", "s")
    print("  ".join(f"{h:>{w}}" for h, w in zip(header, (4, 6, 9, 10, 12, 5), strict=True)))

    work = args.workdir or Path(tempfile.mkdtemp(prefix="lora-zoo-"))
    smallest = None
    for rank in (int(r) for r in args.ranks.split(",")):
        start = time.perf_counter()
        adapter, applied = work / f"adapter-r{rank}", work / f"applied-r{rank}"
        options = ExtractOptions(
            rank=rank,
            embeddings=args.embeddings,
            save_unfactorable=args.save_unfactorable,
            force=True,
        )
        result = extract_adapter(expert, base, adapter, options)
        apply_adapter(base, adapter, applied, force=True)
        value = score(applied, examples, max_new_tokens)
        share = value / expert_score if expert_score else float("nan")
        missed = sum(r.capture is Capture.NOT_CAPTURED for r in result.rows)
        print(
            f"{rank:>4}  {value:>6.3f}  {share:>9.1%}  {overall_error(result.rows):>10.4f}  "
            f"{missed:>12}  {time.perf_counter() - start:>5.1f}"
        )
        if smallest is None and share >= args.keep:
            smallest = rank
    if smallest is None:
        print(f"no rank of the grid keeps {args.keep:.0%} of the expert's score")
    else:
        print(f"smallest rank keeping {args.keep:.0%} of the expert's score: {smallest}")


if __name__ == "__main__":
    main()
