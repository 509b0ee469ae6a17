"""alloykit against mergekit 0.1.5, side by side, on Llama-shaped bf16 checkpoints.

Builds (once) a base and three fine-tunes of the chosen size into ``.benchcache/synthetic``,
creates a mergekit venv if none is given, then for each method runs the same mergekit-format
recipe with both tools, alternating (alloykit, mergekit, alloykit, mergekit, ...), for
``--rounds`` rounds. Each run is a fresh process timed by ``/usr/bin/time -v``: wall time, CPU
time (user + system) and peak RSS of the whole process. Every run starts alike: earlier
outputs flushed to disk and the inputs read once into the page cache. Each round also
measures the read+write floor: reading every input file and writing (then fsyncing) one
output of the same size, and the start-up of ``import torch`` in a fresh interpreter. The
first round's outputs are compared tensor by tensor.

    python benchmarks/vs_mergekit.py                      # 1.1B, 8 methods, 3 rounds
    python benchmarks/vs_mergekit.py --size 0.1B --rounds 1 --only ties
    python benchmarks/vs_mergekit.py --scaling ties       # alloykit only, 0.5B vs 1.1B
    python benchmarks/vs_mergekit.py --skip-mergekit      # alloykit only (smoke runs)
    python benchmarks/vs_mergekit.py --fsync              # alloykit flushes its output

mergekit does not flush its output to disk; alloykit does by default (``--fsync``: the model
survives a power cut). Like is compared with like: alloykit runs with ``--no-fsync`` and is
compared with the floor without fsync, unless ``--fsync`` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import safe_open

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mergekit_parity import DEFAULT_CACHE, alloykit_command, ensure_mergekit
from synthetic import build

TIME = "/usr/bin/time"
WEIGHTS = (0.3, 0.3, 0.4)
BF16_EPS = torch.finfo(torch.bfloat16).eps
FLOOR_BUFFER = 1 << 20
"""The floor's reads and writes go through one reused buffer of this size: small enough to stay
in the CPU's cache. Through a 64 MB buffer the same reads took three times as long here (every
byte copied out to memory and back), which made an earlier floor 3-4 s too slow."""


def recipe(method: str, models: dict[str, Path]) -> dict[str, Any]:
    """The mergekit-format recipe both tools run for ``method``."""
    fts = [str(models[f"ft{i}"]) for i in (1, 2, 3)]
    base = str(models["base"])
    per_model: dict[str, dict[str, float]] = {
        "linear": {},
        "task_arithmetic": {},
        "ties": {"density": 0.5},
        "dare_ties": {"density": 0.5},
        "breadcrumbs_ties": {"density": 0.5, "gamma": 0.01},
        "della": {"density": 0.5, "epsilon": 0.15},
    }
    if method == "slerp":
        return {
            "merge_method": "slerp",
            "base_model": base,
            "models": [{"model": base}, {"model": fts[0]}],
            "parameters": {"t": 0.5},
            "dtype": "bfloat16",
        }
    if method == "model_stock":
        return {
            "merge_method": "model_stock",
            "base_model": base,
            "models": [{"model": m} for m in fts],
            "dtype": "bfloat16",
        }
    body: dict[str, Any] = {
        "merge_method": method,
        "models": [
            {"model": m, "parameters": {"weight": w, **per_model[method]}}
            for m, w in zip(fts, WEIGHTS, strict=True)
        ],
        "dtype": "bfloat16",
    }
    if method != "linear":
        body["base_model"] = base
    return body


RANDOM = {"dare_ties", "della"}
ALLOYKIT_OPTIONS = {m: {"rescale_mode": "l1"} for m in RANDOM}
"""mergekit 0.1.5 rescales DARE/DELLA survivors to the task vector's L1 norm; alloykit's
default divides by the keep probability (the papers). alloykit runs with the matching option."""
METHODS = (
    "linear",
    "task_arithmetic",
    "slerp",
    "ties",
    "dare_ties",
    "breadcrumbs_ties",
    "della",
    "model_stock",
)


@dataclass
class Timing:
    wall: float
    cpu: float
    rss_mb: float


@dataclass
class MethodResult:
    method: str
    runs: dict[str, list[Timing]] = field(default_factory=lambda: {"alloykit": [], "mergekit": []})
    floors: list[tuple[float, float]] = field(default_factory=list)  # (no fsync, with fsync)
    imports: list[float] = field(default_factory=list)  # seconds of `import torch`
    agreement: str = "-"

    def median(self, tool: str, attr: str) -> float:
        values = [getattr(t, attr) for t in self.runs[tool]]
        return statistics.median(values) if values else float("nan")


def timed(command: list[str], log: Path) -> Timing:
    """Run ``command`` under ``/usr/bin/time -v``; raise with its output if it fails."""
    report = log.with_suffix(".time")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with log.open("w") as out:
        done = subprocess.run(
            [TIME, "-v", "-o", str(report), *command], stdout=out, stderr=subprocess.STDOUT, env=env
        )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{log.read_text()[-3000:]}")
    fields = dict(
        line.strip().rsplit(": ", 1) for line in report.read_text().splitlines() if ": " in line
    )
    clock = fields["Elapsed (wall clock) time (h:mm:ss or m:ss)"].split(":")
    wall = sum(float(part) * 60**i for i, part in enumerate(reversed(clock)))
    cpu = float(fields["User time (seconds)"]) + float(fields["System time (seconds)"])
    return Timing(wall, cpu, int(fields["Maximum resident set size (kbytes)"]) / 1024)


def weight_files(model: Path) -> list[Path]:
    return sorted(model.glob("*.safetensors"))


def read_all(inputs: list[Path], buffer: memoryview) -> None:
    """Read every weight file of ``inputs`` with positional reads into ``buffer``."""
    for model in inputs:
        for path in weight_files(model):
            fd = os.open(path, os.O_RDONLY)
            offset = 0
            while (got := os.preadv(fd, [buffer], offset)) > 0:
                offset += got
            os.close(fd)


def read_write_floor(inputs: list[Path], out_bytes: int, scratch: Path) -> tuple[float, float]:
    """Seconds to read every input file and write ``out_bytes`` (then fsync): the I/O any merge
    must do, with positional reads into one reused cache-sized buffer."""
    buffer = bytearray(FLOOR_BUFFER)
    view = memoryview(buffer)
    start = time.perf_counter()
    read_all(inputs, view)
    target = scratch / "floor.bin"
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    written = 0
    while written < out_bytes:
        written += os.pwrite(fd, view[: min(len(buffer), out_bytes - written)], written)
    unsynced = time.perf_counter() - start
    os.fsync(fd)
    os.close(fd)
    synced = time.perf_counter() - start
    target.unlink()
    return unsynced, synced


def torch_import_seconds() -> float:
    """Wall time of a fresh ``python -c "import torch"``: the start-up any torch-based merge
    tool pays before its first read (both tools here import torch)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch"], check=True)
    return time.perf_counter() - start


def inputs_of(method: str, models: dict[str, Path]) -> list[Path]:
    """The model directories ``method``'s recipe reads."""
    body = recipe(method, models)
    inputs = {Path(m["model"]) for m in body["models"]}
    if "base_model" in body:
        inputs.add(Path(body["base_model"]))
    return sorted(inputs)


def settle(inputs: list[Path]) -> None:
    """Start every timed run alike: earlier outputs flushed (``sync``) and the inputs in the
    page cache (read once). Without this a run inherits the previous run's dirty pages, and
    inputs idle for a minute may have been reclaimed (this machine runs DAMON's proactive
    reclaim), so a tool that follows a long run starts from the disk."""
    os.sync()
    read_all(inputs, memoryview(bytearray(FLOOR_BUFFER)))


def floor_of(method: str, models: dict[str, Path], scratch: Path) -> tuple[float, float]:
    """The read+write floor of ``method``'s recipe: its input models, one output."""
    inputs = inputs_of(method, models)
    out_bytes = sum(p.stat().st_size for p in weight_files(models["base"]))
    settle(inputs)
    return read_write_floor(inputs, out_bytes, scratch)


def compare(alloykit_out: Path, mergekit_out: Path, base: Path, random: bool) -> str:
    """Deterministic methods: worst max|a - m| / max|m| over tensors (bf16 eps = 0.0078).
    Random methods: fraction of entries changed from the base and norm of (output - base)."""
    mine, theirs = _open(alloykit_out), _open(mergekit_out)
    if set(mine) != set(theirs):
        return f"DIFFERENT TENSORS: {sorted(set(mine) ^ set(theirs))[:3]}"
    if random:
        base_files = _open(base)
        stats = {}
        for label, files in (("alloykit", mine), ("mergekit", theirs)):
            changed = total = 0
            square = 0.0
            for name, handle in files.items():
                out = handle.get_tensor(name).double()
                delta = out - base_files[name].get_tensor(name).double()
                changed += int((delta != 0).sum())
                total += delta.numel()
                square += float(delta.square().sum())
            stats[label] = (changed / total, square**0.5)
        (fa, na), (fm, nm) = stats["alloykit"], stats["mergekit"]
        return f"random: changed {fa:.3f} vs {fm:.3f}, |out-base| ratio {na / nm:.3f}"
    worst, worst_name = 0.0, ""
    for name, handle in mine.items():
        a = handle.get_tensor(name).float()
        m = theirs[name].get_tensor(name).float()
        scale = m.abs().max().item() or 1.0
        rel = (a - m).abs().max().item() / scale
        if rel > worst:
            worst, worst_name = rel, name
    verdict = "match" if worst <= BF16_EPS else f"{worst / BF16_EPS:.1f} bf16 eps"
    return f"{verdict} (max rel diff {worst:.2e}{', ' + worst_name if worst else ''})"


def _open(directory: Path) -> dict[str, Any]:
    handles: dict[str, Any] = {}
    for path in weight_files(directory):
        handle = safe_open(str(path), "pt")
        for name in handle.keys():  # noqa: SIM118 (safe_open is not a mapping)
            handles[name] = handle
    return handles


def run_method(
    method: str,
    models: dict[str, Path],
    rounds: int,
    mergekit: Path | None,
    scratch: Path,
    fsync: bool = False,
) -> MethodResult:
    result = MethodResult(method)
    mergekit_recipe = recipe(method, models)
    alloykit_recipe = json.loads(json.dumps(mergekit_recipe))
    alloykit_recipe.setdefault("parameters", {}).update(ALLOYKIT_OPTIONS.get(method, {}))
    paths = {}
    for tool, body in (("alloykit", alloykit_recipe), ("mergekit", mergekit_recipe)):
        paths[tool] = scratch / f"{method}-{tool}.yml"
        paths[tool].write_text(yaml.safe_dump(body, sort_keys=False))
    for index in range(rounds):
        for tool in ("alloykit", "mergekit"):
            if tool == "mergekit" and mergekit is None:
                continue
            out = scratch / f"{method}-{tool}-out"
            # and alloykit's OUT.partial: a leftover of an interrupted run would be resumed
            subprocess.run(["rm", "-rf", str(out), f"{out}.partial"], check=True)
            if tool == "alloykit":
                command = [*alloykit_command(), "merge", str(paths[tool]), str(out)]
                command.append("--fsync" if fsync else "--no-fsync")
            else:
                command = [
                    str(mergekit),
                    str(paths[tool]),
                    str(out),
                    "--no-copy-tokenizer",
                    "--quiet",
                    "--random-seed",
                    "0",
                ]
            settle(inputs_of(method, models))
            timing = timed(command, scratch / f"{method}-{tool}.log")
            result.runs[tool].append(timing)
            print(
                f"  {method} round {index + 1} {tool}: {timing.wall:.1f} s wall, "
                f"{timing.cpu:.1f} s CPU, {timing.rss_mb:.0f} MB",
                file=sys.stderr,
            )
        result.floors.append(floor_of(method, models, scratch))
        result.imports.append(torch_import_seconds())
        if index == 0 and mergekit is not None:
            result.agreement = compare(
                scratch / f"{method}-alloykit-out",
                scratch / f"{method}-mergekit-out",
                models["base"],
                method in RANDOM,
            )
            print(f"  {method}: {result.agreement}", file=sys.stderr)
    for tool in ("alloykit", "mergekit"):
        out = scratch / f"{method}-{tool}-out"
        subprocess.run(["rm", "-rf", str(out), f"{out}.partial"], check=True)
    return result


def render(results: list[MethodResult], size: str, rounds: int, fsync: bool) -> str:
    floor_name = "floor+fsync" if fsync else "floor"
    head = (
        "| method | alloykit wall s | mergekit wall s | speed-up | alloykit CPU s | mergekit CPU s"
        f" | alloykit RSS MB | mergekit RSS MB | floor s (+fsync) | alloykit / {floor_name}"
        f" | import torch s | alloykit / ({floor_name} + import)"
        " | agreement |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    mode = "alloykit --fsync" if fsync else "alloykit --no-fsync (mergekit does not fsync)"
    lines = [f"{size}, median of {rounds} rounds, {mode}", "", head]
    for r in results:
        a_wall, m_wall = r.median("alloykit", "wall"), r.median("mergekit", "wall")
        floor = statistics.median(f[0] for f in r.floors)
        floor_sync = statistics.median(f[1] for f in r.floors)
        floor_used = floor_sync if fsync else floor
        startup = statistics.median(r.imports) if r.imports else float("nan")
        lines.append(
            f"| {r.method} | {a_wall:.1f} | {m_wall:.1f} | {m_wall / a_wall:.1f}x "
            f"| {r.median('alloykit', 'cpu'):.1f} | {r.median('mergekit', 'cpu'):.1f} "
            f"| {r.median('alloykit', 'rss_mb'):.0f} | {r.median('mergekit', 'rss_mb'):.0f} "
            f"| {floor:.1f} ({floor_sync:.1f}) | {a_wall / floor_used:.2f} "
            f"| {startup:.1f} | {a_wall / (floor_used + startup):.2f} | {r.agreement} |"
        )
    return "\n".join(lines)


def scaling(
    method: str, sizes: list[str], rounds: int, cache: Path, scratch: Path, fsync: bool
) -> str:
    lines = [
        f"alloykit {method}, median of {rounds} rounds, {'--fsync' if fsync else '--no-fsync'}",
        "",
        "| size | parameters | wall s | CPU s | peak RSS MB | s per B params |",
        "|---|---|---|---|---|---|",
    ]
    for size in sizes:
        models = build(cache / "synthetic", size)
        params = sum(p.stat().st_size for p in weight_files(models["base"])) / 2
        result = run_method(method, models, rounds, None, scratch, fsync)
        wall = result.median("alloykit", "wall")
        lines.append(
            f"| {size} | {params / 1e9:.2f} B | {wall:.1f} | {result.median('alloykit', 'cpu'):.1f}"
            f" | {result.median('alloykit', 'rss_mb'):.0f} | {wall / (params / 1e9):.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1.1B")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", action="append", choices=METHODS)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--mergekit-venv", type=Path)
    parser.add_argument("--skip-mergekit", action="store_true")
    parser.add_argument(
        "--floor-only", action="store_true", help="only measure the read+write floor per method"
    )
    parser.add_argument("--scaling", metavar="METHOD", choices=METHODS)
    parser.add_argument("--scaling-sizes", default="0.5B,1.1B")
    parser.add_argument(
        "--fsync", action="store_true", help="alloykit flushes its output (its default)"
    )
    args = parser.parse_args(argv)
    scratch = args.cache / "vs-mergekit"
    scratch.mkdir(parents=True, exist_ok=True)
    if args.scaling:
        sizes = args.scaling_sizes.split(",")
        print(scaling(args.scaling, sizes, args.rounds, args.cache, scratch, args.fsync))
        return 0
    models = build(args.cache / "synthetic", args.size)
    if args.floor_only:
        for method in args.only or METHODS:
            floors = [floor_of(method, models, scratch) for _ in range(args.rounds)]
            print(
                f"{method}: floor {statistics.median(f[0] for f in floors):.1f} s, "
                f"with fsync {statistics.median(f[1] for f in floors):.1f} s"
            )
        return 0
    mergekit = None
    if not args.skip_mergekit:
        mergekit = ensure_mergekit(args.mergekit_venv or args.cache / "mergekit-venv")
    results = []
    for method in args.only or METHODS:
        results.append(run_method(method, models, args.rounds, mergekit, scratch, args.fsync))
        print(render(results[-1:], args.size, args.rounds, args.fsync), file=sys.stderr)
    print(render(results, args.size, args.rounds, args.fsync))
    return 0


if __name__ == "__main__":
    sys.exit(main())
