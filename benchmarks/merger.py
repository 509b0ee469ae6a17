"""Time one in-memory re-merge (``alloykit.Merger.merge_into``) against the alternatives.

For each model family and method, every round merges with new parameters (``lambda`` changes
from round to round, as in a recipe search) three ways, in turn:

- **merger**: ``merger.merge_into(model, recipe)``: the Merger's resident inputs (planned and
  read once, before timing) merged straight into a live transformers model;
- **torch**: a plain torch expression of the same arithmetic over the same resident tensors,
  written into the same model's parameters (what a hand-written search loop would do); for
  task arithmetic also **in place**, the same sum with no temporaries allocated per tensor
  (a tighter floor);
- **disk**: ``alloykit.merge(recipe, out)`` followed by
  ``AutoModelForCausalLM.from_pretrained(out)``, what a search without a Merger pays.

It prints the median seconds of each and the ratios merger/torch (target <= 1.5) and
disk/merger, the time to build the Merger (plan and read the inputs once), the largest
difference between the merger's and plain torch's results, and the median CPU seconds of the
merger and of plain torch (the process's, all threads): on a machine shared with other work,
wall times mostly measure waiting for a core, CPU times much less so. Per-round times go to
stderr.

    python benchmarks/merger.py --zoo examples/zoo                 # base/ + experts/*/
    python benchmarks/merger.py --size 250M                        # built in a temp dir
    python benchmarks/merger.py --size 250M --dtype bfloat16 --experts 3 --rounds 5
    python benchmarks/merger.py --zoo examples/zoo --torch-threads 1   # for both merger and torch
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

import alloykit
from alloykit.checkpoint.transformers_loading import local_load_options
from alloykit.tiny_models import build_finetune, build_model

SIZES = {
    "250M": {
        "hidden_size": 1024,
        "intermediate_size": 2816,
        "num_hidden_layers": 16,
        "num_attention_heads": 16,
        "num_key_value_heads": 4,
        "vocab_size": 32000,
        "max_position_embeddings": 2048,
    },
    "10M": {
        "hidden_size": 256,
        "intermediate_size": 704,
        "num_hidden_layers": 4,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "vocab_size": 8000,
        "max_position_embeddings": 512,
    },
}
DENSITY = 0.5


def family_of(directory: Path) -> tuple[Path, list[Path]]:
    """A base and its experts: ``base/`` and ``experts/*/`` (or every other model directory)."""
    base = directory / "base"
    pool = directory / "experts" if (directory / "experts").is_dir() else directory
    experts = sorted(p for p in pool.iterdir() if (p / "config.json").exists() and p != base)
    if not (base / "config.json").exists() or not experts:
        sys.exit(f"{directory}: expected base/ and experts/<name>/ model directories")
    return base, experts


def build_family(root: Path, size: str, dtype: torch.dtype, experts: int) -> tuple[Path, list]:
    base = build_model("llama", root / "base", seed=0, dtype=dtype, **SIZES[size])
    return base, [
        build_finetune(base, root / "experts" / f"e{i}", seed=100 + i, scale=0.01)
        for i in range(experts)
    ]


def recipe(method: str, base: Path, experts: list[Path], scale: float) -> dict:
    weight = 1.0 / len(experts)
    parameters = {"weight": weight} | ({"density": DENSITY} if method == "ties" else {})
    return {
        "merge_method": method,
        "base_model": str(base),
        "models": [{"model": str(e), "parameters": parameters} for e in experts],
        "parameters": {"lambda": scale},
        "dtype": "float32",
    }


# -- the plain torch expressions, over the Merger's resident tensors -----------------------------


def torch_task_arithmetic(base, experts, targets, weights, scale) -> None:
    """``base + scale * sum_i w_i (x_i - base)`` for each tensor."""
    for name, target in targets.items():
        b = base[name]
        total = torch.zeros_like(b)
        for w, x in zip(weights, experts, strict=True):
            total.add_(x[name] - b, alpha=w)
        target.copy_(b + scale * total)


def torch_task_arithmetic_in_place(base, experts, targets, weights, scale) -> None:
    """The same sum with no temporary allocated per tensor: ``x_i - base`` into one reused
    buffer, accumulated in the target (fresh tensors cost a page fault per 4 KiB here)."""
    largest = max(t.numel() for t in base.values())
    scratch = torch.empty(largest, dtype=next(iter(base.values())).dtype)
    for name, target in targets.items():
        b = base[name]
        delta = scratch[: b.numel()].view(b.shape)
        target.zero_()
        for w, x in zip(weights, experts, strict=True):
            torch.sub(x[name], b, out=delta)
            target.add_(delta, alpha=w)
        target.mul_(scale).add_(b)


def torch_ties(base, experts, targets, weights, scale) -> None:
    """TIES-Merging (arXiv:2306.01708): keep each task vector's largest DENSITY fraction by
    magnitude, elect a sign per entry from the weighted sum, average the agreeing entries by
    their weights, scale and add to the base."""
    w = torch.tensor(weights)
    for name, target in targets.items():
        b = base[name]
        deltas = torch.stack([x[name] for x in experts]) - b
        flat = deltas.view(len(experts), -1)
        keep = int(flat.shape[1] * DENSITY)
        if keep < flat.shape[1]:
            magnitude = flat.abs()
            cut = magnitude.kthvalue(flat.shape[1] - keep + 1, dim=1, keepdim=True).values
            flat.mul_(magnitude >= cut)
        weighted = deltas * w.view(-1, *[1] * b.dim())
        sign = torch.where(weighted.sum(0) >= 0, 1.0, -1.0)
        agree = weighted.sign() == sign
        total = (weighted * agree).sum(0)
        divisor = (w.view(-1, *[1] * b.dim()) * agree).sum(0)
        merged = torch.where(divisor != 0, total / divisor.clamp_min(1e-30), 0.0)
        target.copy_(b + scale * merged)


PLAIN = {"task_arithmetic": torch_task_arithmetic, "ties": torch_ties}
IN_PLACE = {"task_arithmetic": torch_task_arithmetic_in_place}


# -- timing ---------------------------------------------------------------------------------------


def timed(run: Callable[..., object], *args: object) -> tuple[float, float]:
    """Wall and CPU seconds (this process, all threads) of ``run(*args)``."""
    start, cpu = time.perf_counter(), time.process_time()
    run(*args)
    return time.perf_counter() - start, time.process_time() - cpu


def to_disk_and_back(recipe: dict, out: Path) -> None:
    from transformers import AutoModelForCausalLM

    alloykit.merge(recipe, out, force=True, fsync=False)
    AutoModelForCausalLM.from_pretrained(out, torch_dtype=torch.float32, **local_load_options())


def bench(
    label: str, base: Path, experts: list[Path], method: str, rounds: int, work: Path
) -> dict:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        base, torch_dtype=torch.float32, **local_load_options()
    ).eval()
    params = sum(p.numel() for p in model.parameters())
    start = time.perf_counter()
    merger = alloykit.Merger(recipe(method, base, experts, 1.0))
    load_s = time.perf_counter() - start
    resident = {ref: src.kept for ref, src in merger.sources.items()}
    base_t, experts_t = resident[str(base)], [resident[str(e)] for e in experts]
    targets = {k: v.detach() for k, v in model.state_dict(keep_vars=True).items()}
    targets = {e.name: targets[e.name] for e in merger.entries}
    weights = [1.0 / len(experts)] * len(experts)
    times: dict[str, list[float]] = {"merger": [], "torch": [], "in place": [], "disk": []}
    cpu: dict[str, list[float]] = {"merger": [], "torch": [], "in place": []}
    difference = 0.0
    for index in range(rounds):
        scale = 0.8 + 0.1 * index
        this = recipe(method, base, experts, scale)
        record(times, cpu, "merger", timed(merger.merge_into, model, this))
        merged = {n: t.clone() for n, t in targets.items()}
        inputs = (base_t, experts_t, targets, weights, scale)
        record(times, cpu, "torch", timed(PLAIN[method], *inputs))
        difference = max(
            difference, max(float((merged[n] - t).abs().max()) for n, t in targets.items())
        )
        if method in IN_PLACE:
            record(times, cpu, "in place", timed(IN_PLACE[method], *inputs))
        times["disk"].append(timed(to_disk_and_back, this, work / "merged")[0])
    medians = {k: statistics.median(v) if v else float("nan") for k, v in times.items()}
    cpu_medians = {f"{k} cpu": statistics.median(v) if v else float("nan") for k, v in cpu.items()}
    return {
        "label": label,
        "method": method,
        "params": params,
        "experts": len(experts),
        "load_s": load_s,
        "resident_gb": merger.resident_bytes / 1e9,
        "times": times,
        "difference": difference,
        **medians,
        **cpu_medians,
    }


def record(
    times: dict[str, list[float]], cpu: dict[str, list[float]], key: str, took: tuple[float, float]
) -> None:
    times[key].append(took[0])
    cpu[key].append(took[1])


def report(row: dict) -> None:
    print(
        f"| {row['label']} | {row['method']} | {row['params'] / 1e6:.1f}M x {row['experts']} "
        f"| {row['merger']:.3f} | {row['torch']:.3f} | {row['merger'] / row['torch']:.2f} "
        f"| {row['in place']:.3f} | {row['merger'] / row['in place']:.2f} "
        f"| {row['disk']:.3f} | {row['disk'] / row['merger']:.1f} | {row['load_s']:.2f} "
        f"| {row['difference']:.1e} | {row['merger cpu']:.3f} | {row['torch cpu']:.3f} "
        f"| {row['merger cpu'] / row['torch cpu']:.2f} |",
        flush=True,
    )
    rounds = "; ".join(
        f"{k} " + " ".join(f"{t:.3f}" for t in v) for k, v in row["times"].items() if v
    )
    print(f"  rounds (s): {rounds}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", type=Path, help="a directory with base/ and experts/*/")
    parser.add_argument("--size", choices=sorted(SIZES), help="build Llama-shaped models")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--experts", type=int, default=3, help="experts built with --size")
    parser.add_argument("--methods", nargs="+", default=["task_arithmetic", "ties"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--torch-threads", type=int, help="torch's intra-op threads (default: torch's own)"
    )
    args = parser.parse_args()
    if args.torch_threads is not None:
        torch.set_num_threads(args.torch_threads)
    if args.zoo is None and args.size is None:
        parser.error("give --zoo DIR and/or --size")
    print(
        "| models | method | params x experts | merger s | torch s | merger/torch "
        "| torch in place s | merger/in place | disk+reload s | disk/merger | Merger() s "
        "| max diff | merger CPU s | torch CPU s | CPU merger/torch |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="alloykit-merger-bench-") as tmp:
        work = Path(tmp)
        families = []
        if args.zoo is not None:
            families.append((str(args.zoo), *family_of(args.zoo)))
        if args.size is not None:
            dtype = getattr(torch, args.dtype)
            built = build_family(work / "family", args.size, dtype, args.experts)
            families.append((f"llama {args.size} {args.dtype}", *built))
        for label, base, experts in families:
            for method in args.methods:
                report(bench(label, base, experts, method, args.rounds, work))


if __name__ == "__main__":
    main()
