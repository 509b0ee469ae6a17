"""``alloykit merge --dry-run``'s memory estimate against the peak RSS a merge really reaches.

For each method of ``vs_mergekit.py`` (the same recipes, on the same synthetic Llama-shaped
bf16 checkpoints), prints the dry run's "estimated peak memory" and the peak RSS of the merge
itself, measured by ``/usr/bin/time -v`` on a fresh process (``--no-fsync``), and their ratio.

    python benchmarks/memory_estimate.py --size 0.5B
    python benchmarks/memory_estimate.py --size 0.1B --only ties --threads 1
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mergekit_parity import DEFAULT_CACHE, alloykit_command, tool_env
from synthetic import SHAPES, build
from vs_mergekit import ALLOYKIT_OPTIONS, METHODS, TIME, recipe

UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}


def estimate(recipe_path: Path, threads: int) -> int:
    """The dry run's estimated peak memory, in bytes."""
    command = [
        *alloykit_command(),
        "merge",
        str(recipe_path),
        "--dry-run",
        "--threads",
        str(threads),
    ]
    text = subprocess.run(command, capture_output=True, text=True, check=True, env=tool_env(1))
    found = re.search(r"estimated peak memory ([\d.]+) (\w+)", text.stdout)
    if found is None:
        raise RuntimeError(f"no estimate in the dry run's output:\n{text.stdout}")
    return int(float(found[1]) * UNITS[found[2]])


def peak_rss(recipe_path: Path, out: Path, threads: int) -> int:
    """The merge's peak RSS in bytes (``/usr/bin/time -v``)."""
    command = [TIME, "-v", *alloykit_command(), "merge", str(recipe_path), str(out),
               "--threads", str(threads), "--no-fsync", "--force"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=tool_env(1))
    if done.returncode != 0:
        raise RuntimeError(done.stderr)
    found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    assert found is not None
    return int(found[1]) * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", choices=sorted(SHAPES), default="0.5B")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", nargs="*", default=list(METHODS))
    args = parser.parse_args()
    models = build(args.cache / "synthetic", args.size)
    print("| method | estimate MB | peak RSS MB | estimate / measured |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as scratch:
        for method in args.only:
            body = recipe(method, models)
            body.setdefault("parameters", {}).update(ALLOYKIT_OPTIONS.get(method, {}))
            recipe_path = Path(scratch) / f"{method}.yml"
            recipe_path.write_text(yaml.safe_dump(body))
            out = Path(scratch) / "out"
            estimated = estimate(recipe_path, args.threads)
            measured = peak_rss(recipe_path, out, args.threads)
            shutil.rmtree(out, ignore_errors=True)
            print(
                f"| {method} | {estimated / 1e6:.0f} | {measured / 1e6:.0f} | "
                f"{estimated / measured:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
