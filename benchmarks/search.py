"""Recipe search on the example zoo: quality, estimator error, and candidate throughput.

    python benchmarks/search.py [--zoo examples/zoo] [--trials 200] [--out .benchcache/search]
    python benchmarks/search.py --throughput-only    # measurement 3 alone, no search

Three measurements, printed as ratios and written to ``benchmarks/results/search.json``:

1. **Quality.** A CMA-ES search over task arithmetic's per-expert weights (and λ) on the
   validation split, fitness estimated by IRT on 10% of each task, at most ``--trials``
   candidates; the best recipe is then scored on the test split, which the search never sees,
   as a normalized average (merged / each expert on its own skill), beside the best hand-set
   data-free merge of ``benchmarks/results/quality.json`` (8 experts).
2. **Estimator error.** Random candidates of the same space run on every validation example;
   the IRT estimate (the search's fitted items and subset) and a plain random subset of the
   same size are compared with the full accuracy: mean absolute error in points.
3. **Throughput.** The same candidates merged in memory into a resident model and scored on
   the subset, against merging each to disk with ``alloykit.merge`` and loading it back with
   transformers (what mergekit-evolve and Mergenetic do), scored on the same examples.
   ``--throughput-only`` runs it alone: the subset comes from the IRT items fitted on the
   endpoints' full responses (``OUT/anchors.json`` when a search with this spec left one, else
   computed here), and it writes ``benchmarks/results/search_throughput.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def spec_for(zoo: Path, skills: list[str], args: argparse.Namespace) -> dict[str, Any]:
    weights = {"weight": {"min": 0.0, "max": args.max_weight}}
    return {
        "recipe": {
            "merge_method": "task_arithmetic",
            "base_model": str(zoo / "base"),
            "models": [
                {"model": str(zoo / "experts" / s), "parameters": dict(weights)} for s in skills
            ],
            "parameters": {"normalize": False, "lambda": 1.0},
            "dtype": "float32",
        },
        "tasks": [str(zoo / "tasks" / s) for s in skills],
        "optimizer": args.optimizer,
        "trials": args.trials,
        "layer_groups": args.layer_groups,
        "fitness": {
            "estimator": args.estimator,
            "subset": args.subset,
            "batch_size": 128,
            "strategy": args.strategy,
        },
        "seed": args.seed,
    }


def own_scores(worker, zoo: Path, skills: list[str]) -> dict[str, float]:
    """Each expert's test accuracy on its own skill (the normalizer)."""
    from alloykit.search.workers import Job

    scores = {}
    for skill in skills:
        test = worker.split_named("test")
        requests = {skill: list(range(len(test.tasks[skill].examples)))}
        hits = worker.run(Job(requests, model=str(zoo / "experts" / skill), split="test"))[skill]
        scores[skill] = sum(hits) / len(hits)
    return scores


def hand_set_best(path: Path, experts: int) -> tuple[str, float] | None:
    """The best data-free row for ``experts`` experts in the quality benchmark's JSON."""
    if not path.exists():
        return None
    rows = json.loads(path.read_text())
    rows = rows.get("rows", rows) if isinstance(rows, dict) else rows
    candidates = [
        (row["name"], row["normalized"])
        for row in rows
        if str(row.get("subset")) == str(experts) and row.get("normalized") is not None
    ]
    return max(candidates, key=lambda c: c[1]) if candidates else None


def estimator_errors(space, fitness, worker, points: list[dict], seed: int) -> dict[str, Any]:
    """Full accuracy of each point against its IRT and plain-subset estimates."""
    from alloykit.search.workers import Job

    rng = random.Random(seed)
    irt, plain = [], []
    for point in points:
        responses = worker.run(Job(fitness.full_requests(), recipe=space.recipe(point)))
        full_scores, irt_scores, plain_scores = [], [], []
        for name, split in fitness.tasks.items():
            right = np.asarray(responses[name], dtype=float)
            full_scores.append(right.mean())
            irt_scores.append(split.estimator.estimate(right[split.estimator.index]))
            sample = rng.sample(range(len(right)), len(split.estimator.index))
            plain_scores.append(right[sample].mean())
        full = float(np.mean(full_scores))
        irt.append(abs(float(np.mean(irt_scores)) - full))
        plain.append(abs(float(np.mean(plain_scores)) - full))
    return {
        "candidates": len(points),
        "irt_mae_points": 100 * float(np.mean(irt)),
        "subset_mae_points": 100 * float(np.mean(plain)),
    }


def throughput(space, fitness, worker, points: list[dict], template: Path) -> dict[str, Any]:
    """Seconds per candidate in memory against to disk and back, on the same examples: wall
    time, and this process's CPU time (steadier on a shared machine). The fitness alone is
    timed again on each in-memory candidate."""
    import alloykit
    from alloykit.evaluate import load_model
    from alloykit.search.workers import Job

    requests = fitness.requests()
    in_memory, fitness_cpu = [], 0.0
    wall, cpu = time.perf_counter(), time.process_time()
    for point in points:
        in_memory.append(worker.run(Job(requests, recipe=space.recipe(point))))
    memory = (time.perf_counter() - wall, time.process_time() - cpu)
    for point in points:
        worker.run(Job(requests, recipe=space.recipe(point)))
        start = time.process_time()
        worker.answers(worker.model, worker.tokenizer, Job(requests))
        fitness_cpu += time.process_time() - start
    scratch = Path(tempfile.mkdtemp(prefix="alloykit-search-bench-"))
    try:
        on_disk = []
        wall, cpu = time.perf_counter(), time.process_time()
        for point in points:
            recipe = space.recipe(point)
            out = alloykit.merge(recipe, scratch / "candidate", force=True, fsync=False)
            model, tokenizer = load_model(out)
            on_disk.append(worker.answers(model, tokenizer, Job(requests)))
        disk = (time.perf_counter() - wall, time.process_time() - cpu)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    count = len(points)
    return {
        "candidates": count,
        "same_answers": in_memory == on_disk,
        "in_memory_seconds": memory[0] / count,
        "disk_seconds": disk[0] / count,
        "ratio": disk[0] / memory[0],
        "in_memory_cpu_seconds": memory[1] / count,
        "disk_cpu_seconds": disk[1] / count,
        "cpu_ratio": disk[1] / memory[1],
        "fitness_cpu_seconds": fitness_cpu / count,
    }


def endpoint_responses(spec, worker, fitness, out: Path) -> dict[str, Any]:
    """The base's and experts' full responses: the search's cached ones if they match the spec."""
    from alloykit.search.workers import Job

    cache = out / "anchors.json"
    if cache.exists():
        stored = json.loads(cache.read_text())
        if stored.get("spec") == spec.fingerprint():
            return stored["responses"]
    recipe = spec.recipe
    paths = [recipe["base_model"], *(entry["model"] for entry in recipe["models"])]
    return {path: worker.run(Job(fitness.full_requests(), model=path)) for path in paths}


def throughput_only(args: argparse.Namespace, spec, space, worker) -> int:
    """Measurement 3 alone, on the subset the search's IRT items choose."""
    from alloykit.search.fitness import Fitness

    fitness = Fitness(spec)
    fitness.fit_anchors(endpoint_responses(spec, worker, fitness, args.out))
    rng = np.random.default_rng(args.seed + 1)
    points = [space.point(list(rng.random(space.dimensions))) for _ in range(args.check_candidates)]
    speed = throughput(space, fitness, worker, points[: args.throughput_candidates], args.zoo)
    summary = {
        "zoo": str(args.zoo),
        "strategy": spec.fitness.strategy,
        "examples_per_candidate": sum(len(r) for r in fitness.requests().values()),
        "throughput": speed,
    }
    print(json.dumps(summary, indent=2))
    print(
        f"throughput: in memory {speed['ratio']:.1f}x the disk loop (wall), "
        f"{speed['cpu_ratio']:.1f}x (CPU); fitness {speed['fitness_cpu_seconds']:.3f} CPU s "
        "per candidate"
    )
    path = args.json or ROOT / "benchmarks/results/search_throughput.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", type=Path, default=ROOT / "examples" / "zoo")
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--optimizer", default="cma")
    parser.add_argument("--estimator", default="irt")
    parser.add_argument("--subset", type=float, default=0.1)
    parser.add_argument("--layer-groups", type=int, default=1)
    parser.add_argument("--max-weight", type=float, default=1.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--check-candidates", type=int, default=30)
    parser.add_argument("--throughput-candidates", type=int, default=8)
    parser.add_argument("--quality", type=Path, default=ROOT / "benchmarks/results/quality.json")
    parser.add_argument("--out", type=Path, default=ROOT / ".benchcache" / "search")
    parser.add_argument("--strategy", default="forced", help="exact match: forced or generate")
    parser.add_argument("--throughput-only", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    from alloykit.search import load_spec, run_search
    from alloykit.search.fitness import Fitness
    from alloykit.search.space import Space
    from alloykit.search.workers import CandidateWorker

    skills = sorted(p.name for p in (args.zoo / "experts").iterdir() if p.is_dir())
    skills = skills[: args.experts]
    spec = load_spec(spec_for(args.zoo, skills, args))
    if args.throughput_only:
        space = Space(spec)
        return throughput_only(args, spec, space, CandidateWorker(spec, str(args.zoo / "base")))
    started = time.perf_counter()
    result = run_search(spec, args.out)
    search_seconds = time.perf_counter() - started
    space = Space(spec)
    worker = CandidateWorker(spec, str(args.zoo / "base"))
    own = own_scores(worker, args.zoo, skills)
    normalized = sum(result.test_scores[s] / own[s] for s in skills if own[s] > 0) / len(skills)
    hand_set = hand_set_best(args.quality, len(skills))

    fitness = Fitness(spec)
    anchors = json.loads((args.out / "anchors.json").read_text())["responses"]
    fitness.fit_anchors(anchors)
    rng = np.random.default_rng(args.seed + 1)
    points = [space.point(list(rng.random(space.dimensions))) for _ in range(args.check_candidates)]
    errors = estimator_errors(space, fitness, worker, points, args.seed)
    speed = throughput(space, fitness, worker, points[: args.throughput_candidates], args.zoo)

    summary = {
        "zoo": str(args.zoo),
        "experts": skills,
        "trials": len(result.trials),
        "search_seconds": search_seconds,
        "best_recipe": result.recipe,
        "best_validation_estimate": result.best.fitness,
        "test_scores": result.test_scores,
        "own_scores": own,
        "normalized_test": normalized,
        "hand_set_best": {"name": hand_set[0], "normalized": hand_set[1]} if hand_set else None,
        "estimator_error": errors,
        "throughput": speed,
    }
    print(json.dumps(summary, indent=2))
    if hand_set:
        print(
            f"\nsearched {100 * normalized:.1f} normalized on test vs best hand-set "
            f"{hand_set[0]} {100 * hand_set[1]:.1f}: {100 * (normalized - hand_set[1]):+.1f} points"
        )
    print(
        f"estimator MAE: IRT {errors['irt_mae_points']:.1f} points, random subset "
        f"{errors['subset_mae_points']:.1f} points ({errors['candidates']} candidates)"
    )
    print(f"throughput: in memory {speed['ratio']:.1f}x the disk loop")
    path = args.json or ROOT / "benchmarks/results/search.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
