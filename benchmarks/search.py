"""Recipe search on the example zoo: quality, estimator error, and candidate throughput.

    python benchmarks/search.py [--zoo examples/zoo] [--trials 200] [--out .benchcache/search]
    python benchmarks/search.py --throughput-only    # measurement 3 alone, no search
    python benchmarks/search.py --throughput-only --mergekit-python /path/to/venv/bin/python

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
   transformers, scored on the same examples; with ``--mergekit-python PATH`` (a venv's
   python with mergekit), a third loop merges each candidate with mergekit's ``run_merge`` in a
   long-lived worker process (``benchmarks/mergekit_worker.py``) and reloads it the same way:
   the Mergenetic / mergekit-evolve disk path. Without it that loop is skipped with a line.
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


def mergekit_disk_loop(
    mergekit_python: Path, recipes: list[dict], score, scratch: Path
) -> tuple[list[Any], float, float, float]:
    """Each recipe merged by mergekit's ``run_merge`` in a long-lived worker under
    ``mergekit_python`` (its start-up and imports not counted), then loaded back and scored
    here: the answers, wall seconds, CPU seconds (this process plus the worker's merges), and
    the worker's merge wall seconds alone."""
    import subprocess

    out = scratch / "mergekit-candidate"
    worker = subprocess.Popen(
        [str(mergekit_python), str(Path(__file__).with_name("mergekit_worker.py")), str(out)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        if worker.stdout.readline().strip() != "ready":
            raise RuntimeError(f"{mergekit_python}: mergekit worker did not start (see stderr)")
        answers, merge_wall, merge_cpu = [], 0.0, 0.0
        wall, cpu = time.perf_counter(), time.process_time()
        for number, recipe in enumerate(recipes):
            path = scratch / f"mergekit-{number}.yaml"
            path.write_text(json.dumps(recipe))  # JSON is YAML
            worker.stdin.write(f"{path}\n")
            worker.stdin.flush()
            reply = worker.stdout.readline().split(maxsplit=2)
            if not reply or reply[0] != "done":
                raise RuntimeError(f"mergekit worker on {path}: {' '.join(reply) or 'no answer'}")
            merge_wall += float(reply[1])
            merge_cpu += float(reply[2])
            answers.append(score(out))
        return (
            answers,
            time.perf_counter() - wall,
            time.process_time() - cpu + merge_cpu,
            merge_wall,
        )
    finally:
        worker.stdin.close()
        worker.wait(timeout=60)


def throughput(
    space, fitness, worker, points: list[dict], mergekit_python: Path | None = None
) -> dict[str, Any]:
    """Seconds per candidate in memory against to disk and back, on the same examples: wall
    time, and CPU time (steadier on a shared machine). The fitness alone is timed again on
    each in-memory candidate. With ``mergekit_python``, a third loop merges with mergekit
    instead of ``alloykit.merge`` (the Mergenetic / mergekit-evolve disk path)."""
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
        if mergekit_python is not None:

            def score(out: Path) -> Any:
                model, tokenizer = load_model(out)
                return worker.answers(model, tokenizer, Job(requests))

            recipes = [space.recipe(point) for point in points]
            mk_answers, *mergekit = mergekit_disk_loop(mergekit_python, recipes, score, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    count = len(points)
    result = {
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
    if mergekit_python is not None:
        result["mergekit"] = {
            "same_answers": in_memory == mk_answers,
            "disk_seconds": mergekit[0] / count,
            "disk_cpu_seconds": mergekit[1] / count,
            "merge_seconds": mergekit[2] / count,
            "ratio": mergekit[0] / memory[0],
            "cpu_ratio": mergekit[1] / memory[1],
        }
    return result


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


def mergekit_python(args: argparse.Namespace) -> Path | None:
    """``--mergekit-python`` when it is an interpreter, else None with a line saying why."""
    if args.mergekit_python is None:
        print("mergekit disk loop skipped: no --mergekit-python given")
        return None
    if not args.mergekit_python.is_file():
        print(f"mergekit disk loop skipped: {args.mergekit_python} does not exist")
        return None
    return args.mergekit_python


def throughput_lines(speed: dict[str, Any]) -> str:
    """The throughput ratios in words."""
    lines = (
        f"throughput: in memory {speed['ratio']:.1f}x the alloykit disk loop (wall), "
        f"{speed['cpu_ratio']:.1f}x (CPU); fitness {speed['fitness_cpu_seconds']:.3f} CPU s "
        "per candidate"
    )
    if "mergekit" in speed:
        mk = speed["mergekit"]
        lines += (
            f"\nthroughput: in memory {mk['ratio']:.1f}x the mergekit disk loop (wall), "
            f"{mk['cpu_ratio']:.1f}x (CPU); mergekit's merge {mk['merge_seconds']:.3f} s "
            f"per candidate; same answers: {mk['same_answers']}"
        )
    return lines


def throughput_only(args: argparse.Namespace, spec, space, worker) -> int:
    """Measurement 3 alone, on the subset the search's IRT items choose."""
    from alloykit.search.fitness import Fitness

    fitness = Fitness(spec)
    fitness.fit_anchors(endpoint_responses(spec, worker, fitness, args.out))
    rng = np.random.default_rng(args.seed + 1)
    points = [space.point(list(rng.random(space.dimensions))) for _ in range(args.check_candidates)]
    mergekit = mergekit_python(args)
    speed = throughput(space, fitness, worker, points[: args.throughput_candidates], mergekit)
    summary = {
        "zoo": str(args.zoo),
        "strategy": spec.fitness.strategy,
        "examples_per_candidate": sum(len(r) for r in fitness.requests().values()),
        "throughput": speed,
    }
    print(json.dumps(summary, indent=2))
    print(throughput_lines(speed))
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
    parser.add_argument(
        "--mergekit-python",
        type=Path,
        default=None,
        help="python of a venv with mergekit: adds a loop merging each candidate with mergekit",
    )
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
    mergekit = mergekit_python(args)
    speed = throughput(space, fitness, worker, points[: args.throughput_candidates], mergekit)

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
    print(throughput_lines(speed))
    path = args.json or ROOT / "benchmarks/results/search.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
