"""Recipe search on the example zoo: quality, estimator error, and candidate throughput.

    python benchmarks/search.py [--zoo examples/zoo] [--trials 200] [--out .benchcache/search]
    python benchmarks/search.py --throughput-only    # measurement 3 alone, no search
    python benchmarks/search.py --throughput-only --mergekit-python /path/to/venv/bin/python

Three measurements, printed as ratios and written to ``benchmarks/results/search.json``:

1. **Quality.** A CMA-ES search over the per-expert weights and ``--method``'s own
   parameters (task arithmetic at λ 1 by default; tsv_merge's α, wudi's learning rate) on the
   validation split, fitness estimated by IRT on 10% of each task, ``--trials`` candidates
   (192 by default: with the estimator's 8 calibration candidates, each run on every
   validation example to fit the items, 200 candidates are evaluated); the best recipe is
   then scored on the test split, which the search never sees, as a normalized average
   (merged / each expert on its own skill), beside the best hand-set data-free merge of
   ``benchmarks/results/quality.json`` (8 experts).
2. **Estimator error.** Random candidates of the same space run on every validation example;
   the IRT estimate (the search's fitted items and subset) and plain subsets of the same size
   (a new random one per candidate, and one fixed per task) are compared with the full
   accuracy: mean absolute error and mean signed error (bias) in points.
3. **Throughput.** The same candidates merged in memory into a resident model, against
   merging each to disk with ``alloykit.merge`` and loading it back with transformers, and
   with ``--mergekit-python PATH`` (a venv's python with mergekit) against mergekit's
   ``run_merge`` in a long-lived worker process (``benchmarks/mergekit_worker.py``) and the
   same reload: the Mergenetic / mergekit-evolve disk path (without it, that loop is skipped
   with a line). Every loop is scored by the same fitness (``benchmarks/candidate_loops.py``:
   stages timed in wall and CPU seconds, loops alternating, medians of ``--rounds``), twice:
   on the search's subset (``--throughput-candidates``) and on every validation example
   (``--full-throughput-candidates``, the spec's default estimator ``full``).
   ``--throughput-only`` runs it alone: the subset comes from the IRT items fitted on the
   endpoints' full responses (``OUT/anchors.json`` when a search with this spec left one, else
   computed here), and it writes ``benchmarks/results/search_throughput.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


METHOD_PARAMETERS: dict[str, dict[str, Any]] = {
    "task_arithmetic": {"normalize": False, "lambda": 1.0},
    "tsv_merge": {"alpha": {"min": 0.5, "max": 2.0}},
    "wudi": {"iterations": 100, "learning_rate": {"min": 1e-4, "max": 1e-1, "scale": "log"}},
}
"""Each ``--method``'s recipe parameters (ranges are searched) beside the per-expert weights."""


def spec_for(zoo: Path, skills: list[str], args: argparse.Namespace) -> dict[str, Any]:
    weights = {"weight": {"min": 0.0, "max": args.max_weight}}
    return {
        "recipe": {
            "merge_method": args.method,
            "base_model": str(zoo / "base"),
            "models": [
                {"model": str(zoo / "experts" / s), "parameters": dict(weights)} for s in skills
            ],
            "parameters": dict(METHOD_PARAMETERS[args.method]),
            "dtype": "float32",
        },
        "tasks": [str(zoo / "tasks" / s) for s in skills],
        "optimizer": args.optimizer,
        "population": args.population,
        "trials": args.trials,
        "layer_groups": args.layer_groups,
        "filters": args.filters,
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


def reads_data(method: str) -> bool:
    """Whether a registered method takes calibration statistics (so is not data-free); the
    quality benchmark's calibration drivers, not registered methods, mark their rows
    ``extra.data_driven`` instead."""
    from alloykit.methods import all_methods

    known = {m.name: m for m in all_methods()}
    return method in known and bool(getattr(known[method], "statistics", None))


def hand_set_best(path: Path, experts: int) -> tuple[str, float] | None:
    """The best data-free row for ``experts`` experts in the quality benchmark's JSON."""
    if not path.exists():
        return None
    rows = json.loads(path.read_text())
    rows = rows.get("rows", rows) if isinstance(rows, dict) else rows
    candidates = [
        (row["name"], row["normalized"])
        for row in rows
        if str(row.get("subset")) == str(experts)
        and row.get("normalized") is not None
        and not (row.get("extra") or {}).get("data_driven")
        and not reads_data(row["name"].split()[0])
    ]
    return max(candidates, key=lambda c: c[1]) if candidates else None


def estimator_errors(space, fitness, worker, points: list[dict], seed: int) -> dict[str, Any]:
    """Full accuracy of each point against its IRT estimate and two plain subset means of
    the same size: a new random subset for every candidate (``subset``), and one fixed random
    subset per task for all of them (``fixed_subset``, what the spec's ``estimator: subset``
    runs)."""
    from alloykit.search.workers import Job

    if not points:
        return {"candidates": 0}
    rng = random.Random(seed)
    fixed = {
        name: rng.sample(range(len(split.examples)), len(split.estimator.index))
        for name, split in fitness.tasks.items()
    }
    errors: dict[str, list[float]] = {"irt": [], "subset": [], "fixed_subset": []}
    for point in points:
        responses = worker.run(Job(fitness.full_requests(), recipe=space.recipe(point)))
        full_scores = []
        estimates: dict[str, list[float]] = {kind: [] for kind in errors}
        for name, split in fitness.tasks.items():
            right = np.asarray(responses[name], dtype=float)
            full_scores.append(right.mean())
            estimates["irt"].append(split.estimator.estimate(right[split.estimator.index]))
            sample = rng.sample(range(len(right)), len(split.estimator.index))
            estimates["subset"].append(right[sample].mean())
            estimates["fixed_subset"].append(right[fixed[name]].mean())
        full = float(np.mean(full_scores))
        for kind, values in estimates.items():
            errors[kind].append(float(np.mean(values)) - full)
    result: dict[str, Any] = {"candidates": len(points)}
    for kind, values in errors.items():
        result[f"{kind}_mae_points"] = 100 * float(np.mean(np.abs(values)))
        result[f"{kind}_bias_points"] = 100 * float(np.mean(values))
    return result


def throughput(
    space,
    fitness,
    worker,
    points: list[dict],
    requests: dict[str, list[int]],
    rounds: int,
    mergekit_python: Path | None = None,
) -> dict[str, Any]:
    """Seconds per candidate in memory against to disk and back, every loop scored on
    ``requests`` by the worker's own fitness (``benchmarks/candidate_loops.py``): the first
    point warms up, the others are timed, ``rounds`` times, the loops alternating. The disk
    loops reload the merged weights; the tokenizer, and its remembered encodings, are the
    worker's in every loop, so only the candidate's path differs."""
    from candidate_loops import AlloykitDisk, InMemory, MergekitDisk, compare

    from alloykit.search.workers import Job

    def score(model) -> Any:
        return worker.answers(model, worker.tokenizer, Job(requests))

    recipes = [space.recipe(point) for point in points]
    scratch = Path(tempfile.mkdtemp(prefix="alloykit-search-bench-"))
    loops: list = [InMemory(worker.merge, worker.model, score), AlloykitDisk(score, scratch)]
    try:
        if mergekit_python is not None:
            loops.append(MergekitDisk(mergekit_python, score, scratch))
        result = compare(loops, recipes[0], recipes[1:], rounds)
    finally:
        for loop in loops:
            loop.close()
        shutil.rmtree(scratch, ignore_errors=True)
    return {"examples_per_candidate": sum(len(r) for r in requests.values()), **result}


def throughputs(args: argparse.Namespace, space, fitness, worker, points) -> dict[str, Any]:
    """The comparison with the search's fitness (its estimator's subset) and, on fewer
    candidates, with every validation example (the spec's default estimator, ``full``)."""
    if len(points) < 2 or args.throughput_candidates < 1:
        print("throughput skipped: it needs --check-candidates 2 and --throughput-candidates 1")
        return {}
    mergekit = mergekit_python(args)
    subset = points[: args.throughput_candidates + 1]
    full = points[: args.full_throughput_candidates + 1]
    result = {
        "search_fitness": throughput(
            space, fitness, worker, subset, fitness.requests(), args.rounds, mergekit
        )
    }
    if args.full_throughput_candidates > 0 and len(full) > 1:
        result["full_fitness"] = throughput(
            space, fitness, worker, full, fitness.full_requests(), args.rounds, mergekit
        )
    return result


def fitted_irt(spec, out: Path, zoo: Path):
    """The spec's fitness with IRT items fitted as a search fits them (endpoints and
    calibration candidates, ``OUT/anchors.json`` when a search with this spec left one): the
    spec's own when it searched with IRT, else the same spec with ``estimator: irt``."""
    from alloykit.search.fitness import Fitness
    from alloykit.search.run import anchor_responses
    from alloykit.search.workers import InProcess

    if spec.fitness.estimator != "irt":
        irt = spec.fitness.model_copy(update={"estimator": "irt"})
        spec = spec.model_copy(update={"fitness": irt})
    fitness = Fitness(spec)
    out.mkdir(parents=True, exist_ok=True)
    fitness.fit_anchors(anchor_responses(spec, out, InProcess(spec, str(zoo / "base"), "cpu")))
    return fitness


def mergekit_python(args: argparse.Namespace) -> Path | None:
    """``--mergekit-python`` when it is an interpreter, else None with a line saying why."""
    if args.mergekit_python is None:
        print("mergekit disk loop skipped: no --mergekit-python given")
        return None
    if not args.mergekit_python.is_file():
        print(f"mergekit disk loop skipped: {args.mergekit_python} does not exist")
        return None
    return args.mergekit_python


def throughput_lines(speeds: dict[str, Any]) -> str:
    """The throughput comparisons in words."""
    from candidate_loops import lines

    return "\n".join(
        f"throughput, {name} ({speed['examples_per_candidate']} examples):\n{lines(speed)}"
        for name, speed in speeds.items()
    )


def throughput_only(args: argparse.Namespace, spec, space, worker) -> int:
    """Measurement 3 alone, on the subset the search's IRT items choose."""

    fitness = fitted_irt(spec, args.out, args.zoo)
    rng = np.random.default_rng(args.seed + 1)
    points = [space.point(list(rng.random(space.dimensions))) for _ in range(args.check_candidates)]
    speed = throughputs(args, space, fitness, worker, points)
    summary = {
        "zoo": str(args.zoo),
        "strategy": spec.fitness.strategy,
        "estimator": spec.fitness.estimator,
        "subset": spec.fitness.subset,
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
    parser.add_argument(
        "--trials",
        type=int,
        default=192,
        help="candidates searched; with the IRT estimator's 8 calibration candidates, 200 run",
    )
    parser.add_argument("--optimizer", default="cma")
    parser.add_argument("--population", type=int, default=None, help="candidates per batch")
    parser.add_argument("--estimator", default="irt")
    parser.add_argument("--subset", type=float, default=0.1)
    parser.add_argument("--layer-groups", type=int, default=1)
    parser.add_argument(
        "--filters",
        type=lambda text: [f for f in text.split(",") if f],
        default=[],
        help="tensor-name filters with genes of their own, comma-separated (self_attn,mlp)",
    )
    parser.add_argument("--max-weight", type=float, default=1.5)
    parser.add_argument("--method", choices=sorted(METHOD_PARAMETERS), default="task_arithmetic")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--check-candidates", type=int, default=30)
    parser.add_argument("--throughput-candidates", type=int, default=8)
    parser.add_argument("--full-throughput-candidates", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds (medians)")
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
    sys.path.insert(0, str(Path(__file__).parent))

    from alloykit.search import load_spec, run_search
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

    fitness = fitted_irt(spec, args.out, args.zoo)
    rng = np.random.default_rng(args.seed + 1)
    points = [space.point(list(rng.random(space.dimensions))) for _ in range(args.check_candidates)]
    errors = estimator_errors(space, fitness, worker, points, args.seed)
    speed = throughputs(args, space, fitness, worker, points)

    summary = {
        "zoo": str(args.zoo),
        "experts": skills,
        "trials": len(result.trials),
        "calibration_candidates": spec.fitness.calibration
        if spec.fitness.estimator == "irt"
        else 0,
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
    if errors["candidates"]:
        print(
            f"estimator MAE: IRT {errors['irt_mae_points']:.2f} points, random subset "
            f"{errors['subset_mae_points']:.2f}, fixed random subset "
            f"{errors['fixed_subset_mae_points']:.2f} ({errors['candidates']} candidates)"
        )
    print(throughput_lines(speed))
    path = args.json or ROOT / "benchmarks/results/search.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
