"""Merge-quality benchmark on the example zoo: every data-free method, tuned on validation.

    python benchmarks/quality.py [--zoo examples/zoo] [--subsets 4,8] [--val-limit 64]
                                 [--out benchmarks/results]

A FusionBench-style table. The methods are every registered method that needs no data and can
merge the subset's experts (read from the registry, so methods registered later are included);
a method's hyper-parameters are picked from its grid in ``GRIDS`` (its defaults when it has
none) by the mean validation accuracy over the subset's skills; the chosen merge is then
scored on every skill's test split. Each method also gets a row at its catalog defaults.
Columns: each skill, the average, the normalized average (mean over skills of merged /
expert, as in FusionBench) and the gain kept ((merged avg - base avg) / (expert avg - base
avg)). Rows for the base and the experts come first. With the zoo's held-out skill
(``heldout/``), the tuned task arithmetic and TIES merges are repeated with the held-out expert
in place of the subset's first expert: it should be kept as well as the zoo's own experts.

Writes ``quality.json`` and ``quality.png`` (when matplotlib is installed: the ``bench``
extra) under ``--out``. ``--smoke`` runs a few methods on tiny limits (used by the tests).
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

import alloykit
from alloykit.evaluate import evaluate, load_model, load_task
from alloykit.methods import REQUIRED, BasePolicy, Method, Scope, all_methods, get_method

Grid = dict[str, list[Any]]
ROOT = Path(__file__).resolve().parents[1]

# Hyper-parameter grids of the methods that have tunable strength or sparsity (per-model
# values are given to every expert alike). A registered method without a grid runs at its
# defaults; one with a required parameter and no grid is skipped (and listed as skipped).
GRIDS: dict[str, Grid] = {
    "task_arithmetic": {"lambda": [0.2, 0.3, 0.5, 0.7, 1.0]},
    "ties": {"density": [0.2, 0.5, 0.8], "lambda": [0.3, 0.5, 1.0]},
    "dare_linear": {"density": [0.3, 0.7], "lambda": [0.5, 1.0]},
    "dare_ties": {"density": [0.3, 0.7], "lambda": [0.5, 1.0]},
    "breadcrumbs": {"density": [0.5, 0.9], "lambda": [0.5, 1.0]},
    "breadcrumbs_ties": {"density": [0.5, 0.9], "lambda": [0.5, 1.0]},
    "della": {"density": [0.5, 0.7], "lambda": [0.5, 1.0]},
    "della_linear": {"density": [0.5, 0.7], "lambda": [0.5, 1.0]},
    "sce": {"select_topk": [0.1, 0.5, 1.0]},
    "tsv_merge": {"alpha": [0.5, 0.8, 1.0, 1.3, 1.6, 2.0]},
    "iso_c": {"alpha": [0.5, 1.0, 1.5, 2.0, 2.5]},
    "iso_cts": {"alpha": [0.5, 1.0, 1.5, 2.0, 2.5], "common_space_fraction": [0.8]},
    "pcb": {"pcb_ratio": [0.05, 0.1, 0.2], "lambda": [1.0, 1.5, 2.0]},
    "consensus": {"base_method": ["task_arithmetic", "ties"], "lambda": [0.3, 0.5, 1.0]},
    "magmax": {"lambda": [0.3, 0.5, 0.7, 1.0]},
    "cart": {"rank_ratio": [0.02, 0.05, 0.1, 0.2], "lambda": [1.0, 1.5, 2.0, 3.0]},
    "wudi": {"iterations": [100, 300], "learning_rate": [1e-5, 1e-4, 1e-3, 1e-2, 3e-2]},
    "fisher": {"fisher_floor": [1e-6]},
    "regmean": {"alpha": [0.5, 0.9, 0.95, 0.99]},
}
# Methods reading statistics: each expert's recipe entry names its own skill's task as data:
# (calibrated on the train split once, then read from the statistics cache).
WITH_DATA = {"fisher", "regmean"}
# TIES-style methods sum the kept task vectors (scaled by lambda) as in the papers'
# multi-task setting, rather than averaging them (mergekit's normalize default).
NO_NORMALIZE = {"ties", "dare_ties", "breadcrumbs_ties", "della"}
SMOKE_METHODS = ("linear", "task_arithmetic", "ties")
HELDOUT_METHODS = ("task_arithmetic", "ties")
# Data-driven merges that run the models (alloykit.calibrate drivers), each with its own grid;
# every expert calibrates on its own skill's train split, prompts only for AdaMerging.
DRIVER_GRIDS: dict[str, Grid] = {
    "regmean_pp": {"alpha": [0.5, 0.9, 0.95, 0.99]},
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
    gain: float | None = None
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def average(self) -> float:
        return sum(self.scores.values()) / len(self.scores)


def zoo_paths(zoo: Path, group: str = "") -> tuple[dict[str, Path], dict[str, Path]]:
    """The experts and tasks of the zoo (``group=""``) or of its held-out part."""
    root = zoo / group if group else zoo
    if not (root / "experts").is_dir():
        return {}, {}
    experts = {p.name: p for p in sorted((root / "experts").iterdir()) if p.is_dir()}
    return experts, {name: root / "tasks" / name for name in experts}


def needs_data(method: Method) -> bool:
    """Methods that take statistics are not data-free; those in WITH_DATA get the skills' data."""
    return bool(getattr(method, "statistics", None)) and method.name not in WITH_DATA


def benchmarked_methods(count: int, smoke: bool) -> tuple[list[str], list[str]]:
    """(methods to run on ``count`` experts, methods skipped with the reason)."""
    chosen, skipped = [], []
    for method in all_methods():
        if smoke and method.name not in SMOKE_METHODS:
            continue
        if needs_data(method):
            skipped.append(f"{method.name} (needs data)")
        elif count < method.min_models or (method.max_models or count) < count:
            skipped.append(f"{method.name} (takes {method.min_models}-{method.max_models} models)")
        elif any(
            p.default is REQUIRED and p.name not in GRIDS.get(method.name, {})
            for p in method.params
        ):
            skipped.append(f"{method.name} (a required parameter and no grid)")
        else:
            chosen.append(method.name)
    return chosen, skipped


def recipe_for(method: str, base: Path, experts: list[Path], values: dict[str, Any]) -> dict:
    contract = get_method(method)
    scopes = {p.name: p.scope for p in contract.params}
    per_model = {k: v for k, v in values.items() if scopes.get(k) is Scope.PER_MODEL}
    globals_ = {k: v for k, v in values.items() if scopes.get(k) is not Scope.PER_MODEL}
    if method in NO_NORMALIZE and values:
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
    if contract.base is not BasePolicy.UNUSED:
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


def run_drivers(args, scorer, base, experts, tasks, chosen, own, base_scores) -> list[Row]:
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
        row = Row(name, str(len(chosen)), best[1], test, seconds=time.perf_counter() - start)
        row.normalized, row.gain = kept(test, own, base_scores)
        row.extra["data_driven"] = True
        rows.append(row)
        report(row)
    return rows


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


def kept(scores: dict[str, float], own: dict[str, float], base: dict[str, float]):
    """(normalized average: mean of merged/expert, gain kept: of the averages)."""
    skills = list(scores)
    normalized = sum(scores[s] / own[s] for s in skills if own[s] > 0) / len(skills)

    def mean(values: dict[str, float]) -> float:
        return sum(values[s] for s in skills) / len(skills)

    gap = mean(own) - mean(base)
    gain = (mean(scores) - mean(base)) / gap if gap > 0 else None
    return normalized, gain


def run(args: argparse.Namespace) -> tuple[list[Row], dict[str, Any]]:
    base = args.zoo / "base"
    experts, tasks = zoo_paths(args.zoo)
    held_experts, held_tasks = zoo_paths(args.zoo, "heldout")
    skills = list(experts)
    scorer = Scorer(base, tasks | held_tasks, args.batch_size)
    everything = skills + list(held_experts)
    base_scores = scorer.score(base, everything, "test", args.test_limit)
    rows = [Row("base", "-", {}, {s: base_scores[s] for s in skills})]
    own: dict[str, float] = {}
    best_single: Row | None = None
    for skill, path in (experts | held_experts).items():
        on = skills if skill in experts else [skill]
        scores = scorer.score(path, on, "test", args.test_limit)
        own[skill] = scores[skill]
        if skill in experts:
            candidate = Row(f"expert:{skill}", "-", {}, scores)
            if best_single is None or candidate.average > best_single.average:
                best_single = candidate
    rows.append(Row("experts (each on its own skill)", "-", {}, {s: own[s] for s in skills}))
    rows[-1].normalized, rows[-1].gain = 1.0, 1.0
    assert best_single is not None
    rows.append(Row(f"best single expert ({best_single.name})", "-", {}, best_single.scores))
    meta: dict[str, Any] = {"skipped": {}, "heldout": []}
    for size in args.subsets:
        chosen = skills[:size]
        paths = [experts[s] for s in chosen]
        methods, skipped = benchmarked_methods(size, args.smoke)
        meta["skipped"][str(size)] = skipped
        tuned: dict[str, dict[str, Any]] = {}
        for method in methods:
            start = time.perf_counter()
            defaults = alloykit.merge_to_state_dict(recipe_for(method, base, paths, {}))
            test = scorer.score(defaults, chosen, "test", args.test_limit)
            row = Row(f"{method} (defaults)", str(size), {}, test, seconds=0.0)
            row.normalized, row.gain = kept(test, own, base_scores)
            row.seconds = time.perf_counter() - start
            default_row = row
            points = grid_points(GRIDS.get(method, {}))
            if points == [{}]:
                rows.append(Row(method, str(size), {}, test, row.normalized, row.gain))
                tuned[method] = {}
                report(rows[-1])
                continue
            start = time.perf_counter()
            best: tuple[float, dict[str, Any]] | None = None
            for point in points[:1] if args.smoke else points:
                merged = alloykit.merge_to_state_dict(recipe_for(method, base, paths, point))
                val = scorer.score(merged, chosen, "validation", args.val_limit)
                mean = sum(val.values()) / len(val)
                if best is None or mean > best[0]:
                    best = (mean, point)
            assert best is not None
            merged = alloykit.merge_to_state_dict(recipe_for(method, base, paths, best[1]))
            test = scorer.score(merged, chosen, "test", args.test_limit)
            row = Row(method, str(size), best[1], test, seconds=time.perf_counter() - start)
            row.normalized, row.gain = kept(test, own, base_scores)
            row.extra["validation_average"] = best[0]
            tuned[method] = best[1]
            rows.append(row)
            report(row)
            rows.append(default_row)
        if not args.smoke and args.drivers:
            rows += run_drivers(args, scorer, base, experts, tasks, chosen, own, base_scores)
        for held in held_experts:
            swapped = [held, *chosen[1:]]
            for method in (m for m in HELDOUT_METHODS if m in tuned):
                merged = alloykit.merge_to_state_dict(
                    recipe_for(method, base, [held_experts[held], *paths[1:]], tuned[method])
                )
                test = scorer.score(merged, swapped, "test", args.test_limit)
                entry = {
                    "experts": size,
                    "method": method,
                    "params": tuned[method],
                    "swapped_out": chosen[0],
                    "heldout": held,
                    "heldout_kept": ratio(test[held], own[held]),
                    "swapped_out_kept_in_zoo_merge": ratio(
                        next(
                            r.scores[chosen[0]]
                            for r in rows
                            if r.name == method and r.subset == str(size)
                        ),
                        own[chosen[0]],
                    ),
                    "normalized": kept(test, own, base_scores)[0],
                    "scores": test,
                    "base_on_heldout": base_scores[held],
                    "expert_on_heldout": own[held],
                }
                meta["heldout"].append(entry)
                print(
                    f"{size} experts  {method:17s} with {held} for {chosen[0]}: {held} kept "
                    f"{percent(entry['heldout_kept'])}% ({chosen[0]} in the zoo merge: "
                    f"{percent(entry['swapped_out_kept_in_zoo_merge'])}%), normalized "
                    f"{percent(entry['normalized'])}%",
                    flush=True,
                )
    return rows, meta


def ratio(merged: float, expert: float) -> float | None:
    return merged / expert if expert > 0 else None


def report(row: Row) -> None:
    gain = f"{row.gain:6.1%}" if row.gain is not None else "   -  "
    print(
        f"{row.subset} experts  {row.name:17s} avg {row.average:6.1%}  "
        f"normalized {row.normalized:6.1%}  gain kept {gain}  {row.params}  "
        f"({row.seconds:.0f} s)",
        flush=True,
    )


def percent(value: float | None) -> str:
    return f"{100 * value:.1f}" if value is not None else ""


def markdown(rows: list[Row], skills: list[str]) -> str:
    columns = ["model", "experts", "params", *skills, "avg", "normalized", "gain kept"]
    head = "| " + " | ".join(columns) + " |"
    lines = [head, "|" + " --- |" * (len(skills) + 6)]
    for row in rows:
        cells = [percent(row.scores[s]) if s in row.scores else "" for s in skills]
        params = ", ".join(f"{k}={v}" for k, v in row.params.items()) or ""
        lines.append(
            f"| {row.name} | {row.subset} | {params} | "
            + " | ".join(cells)
            + f" | {percent(row.average)} | {percent(row.normalized)} | {percent(row.gain)} |"
        )
    return "\n".join(lines) + "\n"


def chart(rows: list[Row], path: Path) -> bool:
    """Normalized average per method and subset size, as bars; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    merged = [r for r in rows if r.subset != "-" and not r.name.endswith("(defaults)")]
    methods = list(dict.fromkeys(r.name for r in merged))
    sizes = list(dict.fromkeys(r.subset for r in merged))
    figure, axes = plt.subplots(figsize=(max(6, 0.7 * len(methods) + 2), 4))
    width = 0.8 / max(1, len(sizes))
    for index, size in enumerate(sizes):
        values = {r.name: 100 * (r.normalized or 0) for r in merged if r.subset == size}
        axes.bar(
            [m + index * width for m in range(len(methods))],
            [values.get(m, 0) for m in methods],
            width,
            label=f"{size} experts",
        )
    axes.set_xticks([m + width * (len(sizes) - 1) / 2 for m in range(len(methods))])
    axes.set_xticklabels(methods, rotation=45, ha="right")
    axes.set_ylabel("normalized average (% of experts)")
    axes.set_ylim(0, 105)
    axes.axhline(100, color="grey", linewidth=0.5)
    axes.legend()
    axes.set_title("Data-free merges on the example zoo (test, tuned on validation)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


def commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--zoo", type=Path, default=ROOT / "examples" / "zoo")
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
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where quality.json and quality.png go (default benchmarks/results; "
        "nothing is written in --smoke mode unless given)",
    )
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    start, cpu = time.perf_counter(), time.process_time()
    try:
        rows, meta = run(args)
    finally:
        torch.set_num_threads(threads)
    experts, _ = zoo_paths(args.zoo)
    print()
    table = markdown(rows, list(experts))
    print(table)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(f"total {wall:.0f} s wall, {cpu:.0f} s CPU")
    for size, skipped in meta["skipped"].items():
        if skipped:
            print(f"skipped for {size} experts: {', '.join(skipped)}")
    out = args.out if args.out is not None or args.smoke else ROOT / "benchmarks" / "results"
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        result = {
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": commit(),
            "zoo": str(args.zoo),
            "val_limit": args.val_limit,
            "test_limit": args.test_limit,
            "grids": GRIDS,
            "no_normalize": sorted(NO_NORMALIZE),
            "seconds": {"wall": round(wall, 1), "cpu": round(cpu, 1)},
            "rows": [asdict(r) | {"average": r.average} for r in rows],
            **meta,
            "markdown": table,
        }
        (out / "quality.json").write_text(json.dumps(result, indent=2) + "\n")
        if chart(rows, out / "quality.png"):
            print(f"wrote {out / 'quality.json'} and {out / 'quality.png'}")
        else:
            print(f"wrote {out / 'quality.json'} (no chart: pip install matplotlib)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
