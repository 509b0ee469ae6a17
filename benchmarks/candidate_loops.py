"""Candidate throughput, side by side: a search candidate merged in memory into a resident model,
against merging it to disk and loading it back, every loop scored by the same fitness.

    python benchmarks/candidate_loops.py --size 56M [--mergekit-python VENV/bin/python]
    python benchmarks/candidate_loops.py --size 56M --tokens 4x32 --candidates 4 --rounds 3

Loops (each candidate's stages timed in wall and CPU seconds):

- **in memory**: ``Merger.merge_into`` the resident model (what a search worker does), fitness.
- **alloykit disk**: ``alloykit.merge`` to a scratch folder (no fsync), ``from_pretrained`` of
  the result, fitness.
- **mergekit disk** (with ``--mergekit-python``): mergekit's ``run_merge`` of the same recipe in
  a long-lived worker (``benchmarks/mergekit_worker.py``, its start-up not counted; its CPU time
  is its own ``process_time`` per merge), the same reload, fitness: the path Mergenetic and
  mergekit-evolve's on-disk mode take for each candidate.

Every round runs every candidate through every loop, the loops' order rotating from one
candidate to the next; a first candidate runs through each loop untimed (imports, first
allocations). Reported: per loop, the median over rounds of the mean seconds per candidate,
by stage, and the median over rounds of each disk loop's ratio to the in-memory loop.

Run on its own, it builds (once, under ``--root``) ``benchmarks/synthetic.py``'s Llama-shaped
family of ``--size`` (a bf16 base and ``--experts`` fine-tunes at 1% noise; no tokenizer), and
scores candidates of task arithmetic over the experts (seeded random weights in [0, 1], λ 1,
float32) by their mean next-token loss on a fixed seeded set of random token ids
(``--tokens ROWSxLENGTH``): a teacher-forced forward pass of that many tokens, the cost of a
small perplexity fitness. Writes ``benchmarks/results/candidate_loops_SIZE.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]

Fitness = Callable[[Any], Any]
"""A model's score: any value compared with ``==`` between loops (answers, a loss)."""


class Clock:
    """Wall and CPU seconds of one candidate, by stage."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        yield
        self.add(name, time.perf_counter() - wall, time.process_time() - cpu)

    def add(self, name: str, wall: float, cpu: float) -> None:
        self.wall[name] = self.wall.get(name, 0.0) + wall
        self.cpu[name] = self.cpu.get(name, 0.0) + cpu


def reload(directory: Path):
    """A merged checkpoint loaded back as the disk path does: ``from_pretrained``, eval mode."""
    from transformers import AutoModelForCausalLM

    from alloykit.checkpoint.transformers_loading import local_load_options

    model = AutoModelForCausalLM.from_pretrained(
        directory, local_files_only=True, trust_remote_code=False, **local_load_options()
    )
    return model.eval()


class InMemory:
    """``merge(recipe)`` writes the candidate into ``model``'s parameters."""

    name = "in memory"

    def __init__(self, merge: Callable[[dict], None], model, fitness: Fitness) -> None:
        self.merge, self.model, self.fitness = merge, model, fitness

    def __call__(self, recipe: dict, clock: Clock) -> Any:
        with clock.stage("merge"):
            self.merge(recipe)
        with clock.stage("fitness"):
            return self.fitness(self.model)

    def close(self) -> None:
        """Nothing to release."""


class AlloykitDisk:
    name = "alloykit disk"

    def __init__(self, fitness: Fitness, scratch: Path) -> None:
        self.fitness, self.out = fitness, scratch / "alloykit-candidate"

    def __call__(self, recipe: dict, clock: Clock) -> Any:
        import alloykit

        with clock.stage("merge + write"):
            alloykit.merge(recipe, self.out, force=True, fsync=False)
        with clock.stage("reload"):
            model = reload(self.out)
        with clock.stage("fitness"):
            return self.fitness(model)

    def close(self) -> None:
        """Nothing to release: the scratch folder is the caller's."""


class MergekitDisk:
    """mergekit's ``run_merge`` in a worker under ``python`` (a venv with mergekit)."""

    name = "mergekit disk"

    def __init__(
        self, python: Path, fitness: Fitness, scratch: Path, copy_tokenizer: bool = True
    ) -> None:
        self.fitness, self.scratch = fitness, scratch
        self.out = scratch / "mergekit-candidate"
        command = [str(python), str(Path(__file__).with_name("mergekit_worker.py")), str(self.out)]
        self.worker = subprocess.Popen(
            command + ([] if copy_tokenizer else ["--no-tokenizer"]),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        if self.worker.stdout.readline().strip() != "ready":
            raise RuntimeError(f"{python}: mergekit worker did not start (see stderr)")
        self.count = 0

    def __call__(self, recipe: dict, clock: Clock) -> Any:
        self.count += 1
        path = self.scratch / f"mergekit-{self.count}.yaml"
        path.write_text(json.dumps(recipe))  # JSON is YAML
        wall = time.perf_counter()
        self.worker.stdin.write(f"{path}\n")
        self.worker.stdin.flush()
        reply = self.worker.stdout.readline().split(maxsplit=2)
        if not reply or reply[0] != "done":
            raise RuntimeError(f"mergekit worker on {path}: {' '.join(reply) or 'no answer'}")
        clock.add("merge + write", time.perf_counter() - wall, float(reply[2]))
        with clock.stage("reload"):
            model = reload(self.out)
        with clock.stage("fitness"):
            return self.fitness(model)

    def close(self) -> None:
        self.worker.stdin.close()
        self.worker.wait(timeout=60)


def compare(loops: list, warmup: dict, recipes: list[dict], rounds: int) -> dict[str, Any]:
    """Every recipe through every loop, ``rounds`` times, after ``warmup`` through each untimed
    (see the module docstring). The first loop is the reference: ratios are to it, and every
    loop's answers are compared with its."""
    for loop in loops:
        loop(warmup, Clock())
    samples: dict[str, list[list[Clock]]] = {loop.name: [] for loop in loops}
    answers: dict[str, list[Any]] = {loop.name: [] for loop in loops}
    loads = []
    turn = 0
    for _ in range(rounds):
        start_load = os.getloadavg()[0]
        for loop in loops:
            samples[loop.name].append([])
        for recipe in recipes:
            order = loops[turn % len(loops) :] + loops[: turn % len(loops)]
            turn += 1
            for loop in order:
                clock = Clock()
                answers[loop.name].append(loop(recipe, clock))
                samples[loop.name][-1].append(clock)
        loads.append([round(start_load, 2), round(os.getloadavg()[0], 2)])
    reference = loops[0].name
    result: dict[str, Any] = {"candidates": len(recipes), "rounds": rounds, "load_1min": loads}
    for loop in loops:
        result[loop.name] = summary(samples[loop.name], samples[reference])
        result[loop.name]["same_answers"] = answers[loop.name] == answers[reference]
        if all(isinstance(a, float) for a in answers[reference]):
            result[loop.name]["largest_difference"] = max(
                abs(a - b) for a, b in zip(answers[loop.name], answers[reference], strict=True)
            )
    return result


def summary(rounds: list[list[Clock]], reference: list[list[Clock]]) -> dict[str, Any]:
    """Medians over rounds of the mean seconds per candidate (total and by stage), and of the
    ratio of this loop's total to the reference loop's, in wall and CPU time."""

    def per_round(clocks: list[Clock], kind: str, stage: str | None = None) -> float:
        values = [
            getattr(c, kind).get(stage, 0.0) if stage else sum(getattr(c, kind).values())
            for c in clocks
        ]
        return sum(values) / len(values)

    stages = list(rounds[0][0].wall)
    out: dict[str, Any] = {}
    for kind in ("wall", "cpu"):
        totals = [per_round(r, kind) for r in rounds]
        ratios = [
            per_round(r, kind) / per_round(ref, kind)
            for r, ref in zip(rounds, reference, strict=True)
        ]
        out[kind] = {
            "seconds": statistics.median(totals),
            "seconds_by_round": totals,
            "ratio": statistics.median(ratios),
            "ratio_by_round": ratios,
            "stages": {s: statistics.median(per_round(r, kind, s) for r in rounds) for s in stages},
        }
    return out


def lines(result: dict[str, Any], reference: str = InMemory.name) -> str:
    """The comparison in words: seconds per candidate and ratios, wall and CPU."""
    text = []
    for name, row in result.items():
        if not isinstance(row, dict) or "same_answers" not in row:
            continue
        stages = ", ".join(
            f"{stage} {row['cpu']['stages'][stage]:.3f}" for stage in row["cpu"]["stages"]
        )
        text.append(
            f"{name}: {row['wall']['seconds']:.3f} s wall, {row['cpu']['seconds']:.3f} s CPU "
            f"({stages}); vs {reference} {row['wall']['ratio']:.2f}x wall, "
            f"{row['cpu']['ratio']:.2f}x CPU; same answers: {row['same_answers']}"
        )
    return "\n".join(text)


def token_loss(rows: int, length: int, vocab: int, seed: int = 0) -> Fitness:
    """Mean next-token loss on fixed seeded random ids: a teacher-forced pass of rows x length."""
    tokens = torch.randint(0, vocab, (rows, length), generator=torch.Generator().manual_seed(seed))

    @torch.inference_mode()
    def fitness(model) -> float:
        return float(model(input_ids=tokens, labels=tokens).loss)

    return fitness


def synthetic_recipes(base: Path, experts: list[Path], count: int, seed: int) -> list[dict]:
    generator = torch.Generator().manual_seed(seed)
    return [
        {
            "merge_method": "task_arithmetic",
            "base_model": str(base),
            "models": [
                {"model": str(e), "parameters": {"weight": round(float(w), 6)}}
                for e, w in zip(experts, torch.rand(len(experts), generator=generator), strict=True)
            ],
            "parameters": {"normalize": False, "lambda": 1.0},
            "dtype": "float32",
        }
        for _ in range(count)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="56M")
    parser.add_argument("--experts", type=int, default=4)
    parser.add_argument("--root", type=Path, default=ROOT / ".benchcache" / "synthetic")
    parser.add_argument("--tokens", default="4x32", help="ROWSxLENGTH of the fitness's ids")
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mergekit-python", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads of every loop's fitness; the in-memory merge's threads follow as "
        "in a search worker (alloykit.merge uses its default)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(Path(__file__).parent))
    from synthetic import build

    from alloykit.merger import Merger
    from alloykit.search.workers import merge_threads

    family = build(args.root, args.size, args.experts)
    experts = [family[f"ft{i}"] for i in range(1, args.experts + 1)]
    recipes = synthetic_recipes(family["base"], experts, args.candidates + 1, args.seed)
    rows, length = (int(n) for n in args.tokens.lower().split("x"))
    config = json.loads((family["base"] / "config.json").read_text())
    fitness = token_loss(rows, length, config["vocab_size"], args.seed)

    model = reload(family["base"]).float()
    started = time.perf_counter(), time.process_time()
    merger = Merger(recipes[0])
    merger.options.threads = merge_threads("cpu", merger.resident_bytes)
    setup = time.perf_counter() - started[0], time.process_time() - started[1]
    scratch = Path(tempfile.mkdtemp(prefix="alloykit-loops-", dir=args.root))
    loops: list = [
        InMemory(lambda recipe: merger.merge_into(model, recipe), model, fitness),
        AlloykitDisk(fitness, scratch),
    ]
    try:
        if args.mergekit_python is not None:
            loops.append(MergekitDisk(args.mergekit_python, fitness, scratch, copy_tokenizer=False))
        result = compare(loops, recipes[0], recipes[1:], args.rounds)
    finally:
        for loop in loops:
            loop.close()
        shutil.rmtree(scratch, ignore_errors=True)
    result = {
        "size": args.size,
        "experts": args.experts,
        "fitness": f"mean next-token loss on {rows}x{length} fixed random token ids",
        "merger_setup_seconds": {"wall": setup[0], "cpu": setup[1]},
        "threads": {"torch": args.threads, "in_memory_merge": merger.options.threads},
        **result,
    }
    path = args.json or ROOT / "benchmarks" / "results" / f"candidate_loops_{args.size}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(lines(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
