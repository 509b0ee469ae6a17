"""``alloykit merge --dry-run``'s memory estimate against the peak RSS a merge really reaches.

For each method of ``vs_mergekit.py`` (the same recipes, on the same synthetic Llama-shaped
bf16 checkpoints), prints the dry run's "estimated peak memory" and the peak RSS of the merge
itself, measured by ``/usr/bin/time -v`` on a fresh process (``--no-fsync``), and their ratio.
``--whole-matrix`` does the same for the methods that merge each matrix whole (SVDs, WUDI),
beside TIES and RegMean (on random Gram matrices); ``--kernels`` measures those kernels alone, in a
fresh process per shape, against the working set their contracts declare.

    python benchmarks/memory_estimate.py --size 0.5B
    python benchmarks/memory_estimate.py --size 0.1B --only ties --threads 1
    python benchmarks/memory_estimate.py --size 56M --whole-matrix
    python benchmarks/memory_estimate.py --kernels --kernel-shapes 32000x512 512x1408
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
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "engine"))

from mergekit_parity import DEFAULT_CACHE, alloykit_command, tool_env
from synthetic import SHAPES, build
from vs_mergekit import ALLOYKIT_OPTIONS, METHODS, TIME, recipe

WHOLE_MATRIX = ("ties", "tsv_merge", "iso_c", "iso_cts", "cart", "wudi", "regmean")
"""TIES (streaming) for reference, the methods that take each matrix whole, and RegMean (whole
until it learned to stream with its statistics)."""
WHOLE_MATRIX_PARAMETERS = {"ties": {"density": 0.2}, "wudi": {"iterations": 10}}
"""WUDI's memory does not depend on its iteration count; 10 steps instead of 300 save time."""
KERNEL_SHAPES = ((32000, 512), (512, 1408), (2048, 2048))
KERNEL_PEAK = """
import sys, torch
from alloykit.methods import get_method
torch.set_num_threads(1)
method, rows, cols, models = sys.argv[1], *map(int, sys.argv[2:])
contract = get_method(method)
def status(field):
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(field))
def params(n):
    return {p.name: torch.ones(n) if p.scope.value == "per-model" else p.default
            for p in contract.params} | ({"iterations": 3} if method == "wudi" else {})
base = torch.randn(rows, cols)
tensors = base + 0.01 * torch.randn(models, rows, cols)
contract.kernel(tensors[:, :40, :24], base[:40, :24], **params(models))  # loads LAPACK
before = status("VmRSS")
open("/proc/self/clear_refs", "w").write("5")  # resets VmHWM to the current RSS
merged = contract.kernel(tensors, base, **params(models))
print(status("VmHWM") - before, contract.temporary_values((rows, cols), models) * 4)
"""
"""One kernel's peak above its inputs: the process's high-water mark, reset just before."""


def whole_matrix_recipe(method: str, models: dict[str, Path], scratch: Path) -> dict:
    """All fine-tunes merged onto the base by ``method`` (RegMean: on random Gram matrices)."""
    body: dict = {
        "merge_method": method,
        "models": [{"model": str(path)} for name, path in models.items() if name != "base"],
        "parameters": dict(WHOLE_MATRIX_PARAMETERS.get(method, {})),
    }
    if method not in ("cart", "regmean"):
        body["base_model"] = str(models["base"])
    if method == "regmean":
        from statistics_files import write_statistics

        for seed, entry in enumerate(body["models"]):
            path = scratch / f"gram-{seed}.safetensors"
            write_statistics(Path(entry["model"]), path, seed=seed, kinds=("gram",))
            entry["statistics"] = str(path)
    return body


def kernel_rows(shapes: list[tuple[int, ...]], counts: tuple[int, ...]) -> None:
    """Print each whole-matrix kernel's measured peak against its declared working set."""
    print("| method | shape | models | declared MB | measured MB | declared / measured |")
    print("|---|---|---|---|---|---|")
    for method in WHOLE_MATRIX[1:-1]:
        for rows, cols in shapes:
            for count in counts:
                arguments = [method, str(rows), str(cols), str(count)]
                done = subprocess.run(
                    [sys.executable, "-c", KERNEL_PEAK, *arguments],
                    capture_output=True, text=True, check=True, env=tool_env(1),
                )  # fmt: skip
                measured, declared = map(int, done.stdout.split())
                print(
                    f"| {method} | {rows}x{cols} | {count} | {declared / 1e6:.0f} | "
                    f"{measured / 1e6:.0f} | {declared / measured:.2f} |",
                    flush=True,
                )


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
    parser.add_argument("--only", nargs="*")
    parser.add_argument("--whole-matrix", action="store_true")
    parser.add_argument("--kernels", action="store_true")
    parser.add_argument(
        "--kernel-shapes", nargs="*", default=[f"{m}x{n}" for m, n in KERNEL_SHAPES]
    )
    args = parser.parse_args()
    if args.kernels:
        shapes = [tuple(map(int, shape.split("x"))) for shape in args.kernel_shapes]
        kernel_rows(shapes, (3, 8))
        return
    models = build(args.cache / "synthetic", args.size)
    methods = args.only or (WHOLE_MATRIX if args.whole_matrix else METHODS)
    print("| method | estimate MB | peak RSS MB | estimate / measured |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as scratch:
        for method in methods:
            if args.whole_matrix or method not in METHODS:
                body = whole_matrix_recipe(method, models, Path(scratch))
            else:
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
