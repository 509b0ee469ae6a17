"""Merge-quality benchmark on the example zoo: every data-free method, tuned on validation.

    python benchmarks/quality.py [--zoo examples/zoo] [--subsets 4,8] [--val-limit 64]

For each method and expert subset, hyper-parameters are picked from a small grid by the mean
validation accuracy over the subset's skills; the chosen merge is then scored on every skill's
test split. Rows for the base, the experts and the best single expert come first, as in
FusionBench's tables. ``--smoke`` runs a few methods on tiny limits (used by the test-suite).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

import alloykit
from alloykit.evaluate import evaluate, load_model, load_task
from alloykit.methods import BasePolicy, get_method

Grid = dict[str, list[Any]]

# Hyper-parameter grids (global values; per-model values are shared by all experts).
GRIDS: dict[str, Grid] = {
    "linear": {},
    "task_arithmetic": {"lambda": [0.3, 0.5, 0.7, 1.0]},
    "ties": {"density": [0.2, 0.5], "lambda": [0.5, 0.7, 1.0]},
    "dare_linear": {"density": [0.3, 0.7], "lambda": [0.5, 1.0]},
    "dare_ties": {"density": [0.3, 0.7], "lambda": [0.5, 1.0]},
    "breadcrumbs": {"density": [0.5, 0.9], "lambda": [0.5, 1.0]},
    "breadcrumbs_ties": {"density": [0.5, 0.9], "lambda": [0.5, 1.0]},
    "della": {"density": [0.5, 0.7], "lambda": [0.5, 1.0]},
    "della_linear": {"density": [0.5, 0.7], "lambda": [0.5, 1.0]},
    "sce": {"select_topk": [0.1, 0.5, 1.0]},
    "model_stock": {},
    "karcher": {},
    "multislerp": {},
    "tsv_merge": {"alpha": [0.5, 0.8, 1.0, 1.3]},
    "iso_c": {"alpha": [0.5, 1.0, 1.5]},
    "iso_cts": {"alpha": [0.5, 1.0, 1.5], "common_space_fraction": [0.8]},
    "pcb": {"pcb_ratio": [0.05, 0.1, 0.2], "lambda": [1.0, 1.5, 2.0]},
    "consensus": {"base_method": ["task_arithmetic", "ties"], "lambda": [0.3, 0.5, 1.0]},
    "magmax": {"lambda": [0.3, 0.5, 0.7, 1.0]},
    "cart": {"rank_ratio": [0.05, 0.1, 0.2], "lambda": [1.0, 1.5, 2.0]},
    "wudi": {"iterations": [300], "learning_rate": [1e-5, 1e-4]},
    "fisher": {"fisher_floor": [1e-6]},
    "regmean": {"alpha": [0.5, 0.95]},
}
# Methods reading statistics: each expert's recipe entry names its own skill's task as data:
# (calibrated on the train split once, then read from the statistics cache).
WITH_DATA = {"fisher", "regmean"}
PER_MODEL = {"density", "weight", "gamma", "epsilon"}
# TIES-style methods sum the kept task vectors (scaled by lambda) as in the papers'
# multi-task setting, rather than averaging them (mergekit's normalize default).
NO_NORMALIZE = {"ties", "dare_ties", "breadcrumbs_ties", "della"}
SMOKE_METHODS = ("linear", "task_arithmetic", "ties")
# Data-driven merges that run the models (alloykit.calibrate drivers), each with its own grid;
# every expert calibrates on its own skill's train split, prompts only for AdaMerging.
DRIVER_GRIDS: dict[str, Grid] = {
    "regmean_pp": {"alpha": [0.5, 0.95]},
    "adamerging": {"granularity": ["task", "layer"], "lr": [1e-2]},
    "greedy_soup": {},
}


@dataclass
class Row:
    name: str
    subset: str
    params: dict[str, Any]
    scores: dict[str, float]
    normalized: float | None = None
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def average(self) -> float:
        return sum(self.scores.values()) / len(self.scores)


def zoo_paths(zoo: Path) -> tuple[Path, dict[str, Path], dict[str, Path]]:
    experts = {p.name: p for p in sorted((zoo / "experts").iterdir()) if p.is_dir()}
    tasks = {name: zoo / "tasks" / name for name in experts}
    return zoo / "base", experts, tasks


def recipe_for(method: str, base: Path, experts: list[Path], values: dict[str, Any]) -> dict:
    per_model = {k: v for k, v in values.items() if k in PER_MODEL}
    globals_ = {k: v for k, v in values.items() if k not in PER_MODEL}
    if method in NO_NORMALIZE:
        globals_["normalize"] = False
    recipe: dict[str, Any] = {
        "merge_method": method,
        "models": [
            {"model": str(p), "parameters": dict(per_model)}
            | ({"data": str(p.parents[1] / "tasks" / p.name)} if method in WITH_DATA else {})
            for p in experts
        ],
        "parameters": globals_,
        "seed": 0,
    }
    if get_method(method).base is not BasePolicy.UNUSED:
        recipe["base_model"] = str(base)
    return recipe


def driver_state(
    name: str,
    base: Path,
    experts: list[Path],
    tasks: list[Path],
    point: dict[str, Any],
    val_limit: int | None,
) -> dict[str, torch.Tensor]:
    """The merged weights a data-driven driver finds for ``experts`` (in memory)."""
    from alloykit.calibrate import adamerging, greedy_soup, regmean_pp

    if name == "regmean_pp":
        return regmean_pp.regmean_pp(experts, tasks, **point).state
    if name == "adamerging":
        settings = adamerging.AdaMergingSettings(steps=100, **point)
        return adamerging.adamerging(base, experts, tasks, settings).state
    soup = greedy_soup.greedy_soup(experts, tasks, limit=val_limit)
    return alloykit.merge_to_state_dict(soup.recipe())


def grid_points(grid: Grid) -> list[dict[str, Any]]:
    keys = list(grid)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*grid.values())]


class Scorer:
    """Scores state dicts by loading them into one template model (no disk round trip)."""

    def __init__(self, base: Path, tasks: dict[str, Path], batch_size: int) -> None:
        self.model, self.tokenizer = load_model(base)
        self.tasks = {name: load_task(path) for name, path in tasks.items()}
        self.batch_size = batch_size

    def score(
        self,
        state: dict[str, torch.Tensor] | Path,
        skills: list[str],
        split: str,
        limit: int | None,
    ) -> dict[str, float]:
        if isinstance(state, Path):
            model, tokenizer = load_model(state)
        else:
            missing, unexpected = self.model.load_state_dict(
                {k: v.float() for k, v in state.items()}, strict=False
            )
            if unexpected or [k for k in missing if "lm_head" not in k]:
                raise RuntimeError(f"state dict mismatch: {missing[:3]} {unexpected[:3]}")
            model, tokenizer = self.model, self.tokenizer
        results = evaluate(
            model,
            [self.tasks[s] for s in skills],
            split=split,
            limit=limit,
            batch_size=self.batch_size,
            tokenizer=tokenizer,
        )
        return {s: r.score for s, r in zip(skills, results, strict=True)}


def run(args: argparse.Namespace) -> list[Row]:
    base, experts, tasks = zoo_paths(args.zoo)
    skills = list(experts)
    scorer = Scorer(base, tasks, args.batch_size)
    rows = [Row("base", "-", {}, scorer.score(base, skills, "test", args.test_limit))]
    own: dict[str, float] = {}
    best_single: Row | None = None
    for skill, path in experts.items():
        scores = scorer.score(path, skills, "test", args.test_limit)
        own[skill] = scores[skill]
        candidate = Row(f"expert:{skill}", "-", {}, scores)
        if best_single is None or candidate.average > best_single.average:
            best_single = candidate
    rows.append(Row("experts (each on its own skill)", "-", {}, dict(own), normalized=1.0))
    assert best_single is not None
    rows.append(Row(f"best single expert ({best_single.name})", "-", {}, best_single.scores))
    methods = SMOKE_METHODS if args.smoke else tuple(GRIDS)
    for size in args.subsets:
        chosen = skills[:size]
        for method in methods:
            start = time.perf_counter()
            best: tuple[float, dict[str, Any]] | None = None
            points = grid_points(GRIDS[method])
            for point in points[:1] if args.smoke else points:
                recipe = recipe_for(method, base, [experts[s] for s in chosen], point)
                merged = alloykit.merge_to_state_dict(recipe)
                val = scorer.score(merged, chosen, "validation", args.val_limit)
                mean = sum(val.values()) / len(val)
                if best is None or mean > best[0]:
                    best = (mean, point)
            assert best is not None
            merged = alloykit.merge_to_state_dict(
                recipe_for(method, base, [experts[s] for s in chosen], best[1])
            )
            test = scorer.score(merged, chosen, "test", args.test_limit)
            normalized = sum(test[s] / own[s] for s in chosen if own[s] > 0) / len(chosen)
            row = Row(method, str(size), best[1], test, normalized, time.perf_counter() - start)
            rows.append(row)
            print(
                f"{size} experts  {method:17s} avg {row.average:6.1%}  "
                f"normalized {normalized:6.1%}  {best[1]}  ({row.seconds:.0f} s)",
                flush=True,
            )
        if not args.smoke and args.drivers:
            rows += run_drivers(args, scorer, base, experts, tasks, chosen, own)
    return rows


def run_drivers(args, scorer, base, experts, tasks, chosen, own) -> list[Row]:
    """Rows of the data-driven drivers for one subset, chosen on validation as above."""
    rows = []
    for name, grid in DRIVER_GRIDS.items():
        start = time.perf_counter()
        paths = [experts[s] for s in chosen]
        skill_tasks = [tasks[s] for s in chosen]
        best: tuple[float, dict[str, Any], dict[str, torch.Tensor]] | None = None
        for point in grid_points(grid):
            state = driver_state(name, base, paths, skill_tasks, point, args.val_limit)
            val = scorer.score(state, chosen, "validation", args.val_limit)
            mean = sum(val.values()) / len(val)
            if best is None or mean > best[0]:
                best = (mean, point, state)
        assert best is not None
        test = scorer.score(best[2], chosen, "test", args.test_limit)
        normalized = sum(test[s] / own[s] for s in chosen if own[s] > 0) / len(chosen)
        row = Row(name, str(len(chosen)), best[1], test, normalized, time.perf_counter() - start)
        rows.append(row)
        print(
            f"{len(chosen)} experts  {name:17s} avg {row.average:6.1%}  "
            f"normalized {normalized:6.1%}  {best[1]}  ({row.seconds:.0f} s)",
            flush=True,
        )
    return rows


def markdown(rows: list[Row], skills: list[str]) -> str:
    head = "| model | experts | params | " + " | ".join(skills) + " | avg | normalized |"
    lines = [head, "|" + " --- |" * (len(skills) + 5)]
    for row in rows:
        cells = [f"{100 * row.scores[s]:.1f}" if s in row.scores else "" for s in skills]
        params = ", ".join(f"{k}={v}" for k, v in row.params.items()) or ""
        norm = f"{100 * row.normalized:.1f}" if row.normalized is not None else ""
        lines.append(
            f"| {row.name} | {row.subset} | {params} | "
            + " | ".join(cells)
            + f" | {100 * row.average:.1f} | {norm} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--zoo", type=Path, default=Path(__file__).resolve().parents[1] / "examples" / "zoo"
    )
    parser.add_argument("--subsets", type=lambda s: [int(x) for x in s.split(",")], default=[4, 8])
    parser.add_argument("--val-limit", type=int, default=64)
    parser.add_argument("--test-limit", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (tiny models: 1)")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument(
        "--drivers",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run the data-driven drivers (RegMean++, AdaMerging, greedy soup)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write all rows as JSON")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    rows = run(args)
    _, experts, _ = zoo_paths(args.zoo)
    print()
    print(markdown(rows, list(experts)))
    print(f"total {time.perf_counter() - start:.0f} s")
    if args.json:
        args.json.write_text(
            json.dumps([asdict(r) | {"average": r.average} for r in rows], indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
