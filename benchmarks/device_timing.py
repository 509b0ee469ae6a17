"""Time alloykit merges on CPU and on CUDA over the same synthetic checkpoints (one run each).

Used on a GPU machine to fill in the --device cuda rows of benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthetic import build

import alloykit

RECIPES = {
    "linear": lambda m: {
        "merge_method": "linear",
        "models": [
            {"model": str(m[k]), "parameters": {"weight": 1.0}} for k in ("ft1", "ft2", "ft3")
        ],
    },
    "ties": lambda m: {
        "merge_method": "ties",
        "base_model": str(m["base"]),
        "models": [
            {"model": str(m[k]), "parameters": {"weight": 1.0, "density": 0.5}}
            for k in ("ft1", "ft2", "ft3")
        ],
    },
    "dare_ties": lambda m: {
        "merge_method": "dare_ties",
        "base_model": str(m["base"]),
        "models": [
            {"model": str(m[k]), "parameters": {"weight": 1.0, "density": 0.5}}
            for k in ("ft1", "ft2", "ft3")
        ],
    },
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("root", type=Path)
    parser.add_argument("--size", default="0.5B")
    parser.add_argument("--devices", default="cpu,cuda")
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    start = time.perf_counter()
    models = build(args.root, args.size)
    print(f"built {args.size} checkpoints in {time.perf_counter() - start:.1f} s", flush=True)
    for method, recipe in RECIPES.items():
        for device in args.devices.split(","):
            out = args.root / f"out-{method}-{device}"
            start = time.perf_counter()
            alloykit.merge(recipe(models), out, device=device, threads=args.threads, force=True)
            wall = time.perf_counter() - start
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(
                f"{method:10s} {device:5s} {wall:7.2f} s  (process peak RSS so far {rss:.0f} MB)",
                flush=True,
            )


if __name__ == "__main__":
    main()
