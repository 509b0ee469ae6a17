"""Compose zoo experts into a Mixtral MoE with prompted gates and score it on their skills.

    python examples/moe_zoo.py [--zoo examples/zoo] [--experts 4] [--top-k 1] [--limit N]
                               [--gate-mode hidden_expert]

Prints each skill's test exact match for the MoE beside the expert's own score, so it can be
set beside the best data-free merge in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from alloykit.compose import build_moe
from alloykit.evaluate import evaluate, load_task

ZOO = Path(__file__).resolve().parent / "zoo"


def gate_prompts(zoo: Path, skill: str, count: int) -> list[str]:
    lines = (zoo / "tasks" / skill / "train.jsonl").read_text().splitlines()[:count]
    return [json.loads(line)["prompt"] for line in lines]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--zoo", type=Path, default=ZOO)
    parser.add_argument("--experts", type=int, default=4, help="first N skills, sorted by name")
    parser.add_argument("--top-k", type=int, default=1, help="experts_per_token")
    parser.add_argument("--prompts", type=int, default=8, help="gate prompts per skill")
    parser.add_argument("--gate-mode", default="hidden_expert")
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    skills = sorted(p.name for p in (args.zoo / "experts").iterdir())[: args.experts]
    recipe = {
        "base_model": str(args.zoo / "base"),
        "architecture": "mixtral",
        "gate_mode": args.gate_mode,
        "experts_per_token": args.top_k,
        "experts": [
            {
                "source_model": str(args.zoo / "experts" / s),
                "positive_prompts": gate_prompts(args.zoo, s, args.prompts),
            }
            for s in skills
        ],
    }
    scores = json.loads((args.zoo / "scores.json").read_text())["scores"]
    with tempfile.TemporaryDirectory() as tmp:
        out = build_moe(recipe, Path(tmp) / "moe")
        tasks = [load_task(args.zoo / "tasks" / s) for s in skills]
        results = evaluate(out, tasks, split="test", limit=args.limit)
    print(f"| skill | expert | MoE ({len(skills)} experts, top-{args.top_k}, {args.gate_mode}) |")
    print("| --- | --- | --- |")
    for skill, result in zip(skills, results, strict=True):
        print(f"| {skill} | {100 * scores[skill][skill]:.1f} | {100 * result.score:.1f} |")
    average = sum(r.score for r in results) / len(results)
    normalized = sum(r.score / scores[s][s] for s, r in zip(skills, results, strict=True)) / len(
        skills
    )
    print(f"MoE average {100 * average:.1f}, normalized {100 * normalized:.1f}")


if __name__ == "__main__":
    main()
