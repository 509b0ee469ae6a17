"""Two builds of alloykit against each other on ``vs_mergekit.py``'s recipes (an A/B test).

Each side is an ``alloykit`` executable (say, the same checkout at two commits, each in its own
venv with its kernels built). For each method the two run the same recipe (mergekit format, as
``vs_mergekit.py`` gives alloykit: ``--no-fsync``, DARE and DELLA with ``rescale_mode: l1``)
in alternation, for ``--rounds`` rounds: A B, then B A, then A B, ..., so that load from other
work on the machine, and any drift, falls on both sides alike. Every run starts as in
``vs_mergekit.py``: earlier outputs flushed, the inputs read once into the page cache; each is
a fresh process timed by ``/usr/bin/time -v`` (wall, CPU = user + system, peak RSS).

It prints, per method, the medians of both sides and their ratio (B / A: above 1 is slower
than A); per-run times go to stderr.

    python benchmarks/ab_alloykit.py --a /work/wt-before/.venv/bin/alloykit \\
        --b .venv/bin/alloykit --cache /work/benchcache          # 1.1B, 8 methods, 3 rounds
    python benchmarks/ab_alloykit.py --a OLD --b NEW --only ties --rounds 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mergekit_parity import DEFAULT_CACHE
from synthetic import build
from vs_mergekit import ALLOYKIT_OPTIONS, METHODS, Timing, inputs_of, recipe, settle, timed


def alloykit_recipe(method: str, models: dict[str, Path]) -> dict:
    """``vs_mergekit.py``'s recipe for ``method`` with the options it gives alloykit."""
    body = json.loads(json.dumps(recipe(method, models)))
    body.setdefault("parameters", {}).update(ALLOYKIT_OPTIONS.get(method, {}))
    return body


def run_method(
    method: str, models: dict[str, Path], sides: dict[str, Path], rounds: int, scratch: Path
) -> dict[str, list[Timing]]:
    """``rounds`` runs of each side, alternating (A B, B A, ...)."""
    path = scratch / f"{method}.yml"
    path.write_text(yaml.safe_dump(alloykit_recipe(method, models), sort_keys=False))
    runs: dict[str, list[Timing]] = {side: [] for side in sides}
    order = list(sides)
    for index in range(rounds):
        for side in order if index % 2 == 0 else order[::-1]:
            out = scratch / f"{method}-{side}-out"
            subprocess.run(["rm", "-rf", str(out), f"{out}.partial"], check=True)
            settle(inputs_of(method, models))
            command = [str(sides[side]), "merge", str(path), str(out), "--no-fsync"]
            timing = timed(command, scratch / f"{method}-{side}.log")
            runs[side].append(timing)
            print(
                f"  {method} round {index + 1} {side}: {timing.wall:.1f} s wall, "
                f"{timing.cpu:.1f} s CPU, {timing.rss_mb:.0f} MB",
                file=sys.stderr,
                flush=True,
            )
            subprocess.run(["rm", "-rf", str(out)], check=True)
    return runs


def row(method: str, runs: dict[str, list[Timing]]) -> str:
    def median(side: str, attr: str) -> float:
        return statistics.median(getattr(t, attr) for t in runs[side])

    a_wall, b_wall = median("A", "wall"), median("B", "wall")
    a_cpu, b_cpu = median("A", "cpu"), median("B", "cpu")
    return (
        f"| {method} | {a_wall:.1f} | {b_wall:.1f} | {b_wall / a_wall:.2f} | {a_cpu:.1f} "
        f"| {b_cpu:.1f} | {b_cpu / a_cpu:.2f} | {median('A', 'rss_mb'):.0f} "
        f"| {median('B', 'rss_mb'):.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", type=Path, required=True, help="side A's alloykit executable")
    parser.add_argument("--b", type=Path, required=True, help="side B's alloykit executable")
    parser.add_argument("--size", default="1.1B")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", action="append", choices=METHODS)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--scratch", type=Path, help="where outputs go (default: a temp dir)")
    args = parser.parse_args()
    models = build(args.cache / "synthetic", args.size)
    sides = {"A": args.a, "B": args.b}
    print(f"{args.size}, median of {args.rounds} rounds, alternating A B / B A")
    print(f"A = {args.a}, B = {args.b}\n")
    print(
        "| method | A wall s | B wall s | B / A wall | A CPU s | B CPU s | B / A CPU "
        "| A RSS MB | B RSS MB |\n|---|---|---|---|---|---|---|---|---|",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="alloykit-ab-", dir=args.scratch) as tmp:
        for method in args.only or METHODS:
            print(
                row(method, run_method(method, models, sides, args.rounds, Path(tmp))), flush=True
            )


if __name__ == "__main__":
    main()
