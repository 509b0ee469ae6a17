"""Exact match on the example zoo by teacher forcing against greedy generation: agreement and time.

    python benchmarks/exact_match.py [--zoo examples/zoo] [--split validation] [--subset 0.1]

For every zoo model (the base and each expert) and every task, both strategies of
``alloykit.evaluate.answer_hits`` score the whole split; the per-example verdicts are compared,
and the examples teacher forcing left to generation are counted. Each strategy's CPU time
(``time.process_time``, one torch thread, batches of 128 as the search uses) is taken on the
whole split and on a seeded random ``--subset`` of each task (the size the search's fitness runs).
Writes ``benchmarks/results/exact_match.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
STRATEGIES = ("generate", "forced")


def cpu_seconds(model, tokenizer, tasks, examples, strategy: str, batch_size: int):
    """``(hits per task, CPU seconds)`` of scoring every task's examples with ``strategy``."""
    from alloykit.evaluate import answer_hits

    start = time.process_time()
    hits = {
        task.name: answer_hits(
            model,
            tokenizer,
            examples[task.name],
            max_new_tokens=task.max_new_tokens,
            batch_size=batch_size,
            strategy=strategy,
        )
        for task in tasks
    }
    return hits, time.process_time() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", type=Path, default=ROOT / "examples" / "zoo")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--subset", type=float, default=0.1)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/exact_match.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    from alloykit.evaluate import forced_verdicts, load_model, load_task

    models = ["base", *sorted(f"experts/{p.name}" for p in (args.zoo / "experts").iterdir())]
    tasks = [load_task(p) for p in sorted((args.zoo / "tasks").iterdir()) if p.is_dir()]
    full = {task.name: task.examples(args.split) for task in tasks}
    subset = {}
    for task in tasks:
        rng = random.Random(f"0:{task.name}")
        size = max(1, round(args.subset * len(full[task.name])))
        chosen = sorted(rng.sample(range(len(full[task.name])), size))
        subset[task.name] = [full[task.name][i] for i in chosen]

    rows = []
    for name in models:
        model, tokenizer = load_model(args.zoo / name)
        row: dict = {"model": name}
        for label, examples in (("full", full), ("subset", subset)):
            hits = {}
            for strategy in STRATEGIES:
                hits[strategy], seconds = cpu_seconds(
                    model, tokenizer, tasks, examples, strategy, args.batch_size
                )
                row[f"{label}_{strategy}_cpu_s"] = seconds
            if label == "full":
                row["examples"] = sum(len(h) for h in hits["generate"].values())
                row["disagreements"] = {
                    task: [
                        i
                        for i, (g, f) in enumerate(zip(hits["generate"][task], h, strict=True))
                        if g != f
                    ]
                    for task, h in hits["forced"].items()
                }
                row["accuracy"] = {task: sum(h) / len(h) for task, h in hits["forced"].items()}
        row["left_to_generation"] = sum(
            verdict is None
            for task in tasks
            for verdict in forced_verdicts(
                model,
                tokenizer,
                full[task.name],
                max_new_tokens=task.max_new_tokens,
                batch_size=args.batch_size,
            )
        )
        rows.append(row)
        disagreements = sum(len(d) for d in row["disagreements"].values())
        print(
            f"{name:20s} {row['examples']} examples, {disagreements} disagreements, "
            f"{row['left_to_generation']} left to generation; CPU s full "
            f"{row['full_generate_cpu_s']:.2f} -> {row['full_forced_cpu_s']:.2f}, subset "
            f"{row['subset_generate_cpu_s']:.3f} -> {row['subset_forced_cpu_s']:.3f}",
            flush=True,
        )

    def total(key: str) -> float:
        return sum(row[key] for row in rows)

    summary = {
        "zoo": str(args.zoo),
        "split": args.split,
        "subset": args.subset,
        "examples": int(total("examples")),
        "disagreements": sum(len(d) for row in rows for d in row["disagreements"].values()),
        "left_to_generation": int(total("left_to_generation")),
        "per_model_mean_cpu_s": {
            f"{label}_{strategy}": total(f"{label}_{strategy}_cpu_s") / len(rows)
            for label in ("full", "subset")
            for strategy in STRATEGIES
        },
        "models": rows,
    }
    means = summary["per_model_mean_cpu_s"]
    full_ratio = means["full_generate"] / means["full_forced"]
    subset_ratio = means["subset_generate"] / means["subset_forced"]
    print(
        f"\n{summary['examples']} examples ({len(rows)} models x {len(tasks)} tasks), "
        f"{summary['disagreements']} disagreements, {summary['left_to_generation']} left to "
        f"generation; per model, CPU s: full {means['full_generate']:.2f} generate vs "
        f"{means['full_forced']:.2f} forced ({full_ratio:.2f}x), {args.subset:.0%} subsets "
        f"{means['subset_generate']:.3f} vs {means['subset_forced']:.3f} ({subset_ratio:.2f}x)"
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
