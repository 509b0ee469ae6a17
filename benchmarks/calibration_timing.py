"""Time ``alloykit calibrate``: on the zoo's base per task, or on a ~250M-parameter model.

    python benchmarks/calibration_timing.py [--zoo examples/zoo] [--tasks sort,reverse]
    python benchmarks/calibration_timing.py --size 250M [--samples 256] [--fisher-samples 64]

Zoo: imports and a first model load are done before timing; one torch thread (the zoo's model
is 1.1 M parameters). Prints wall and CPU seconds per task for Grams alone and Grams + Fisher,
and the process's peak RSS.

``--size 250M``: builds once (under ``--cache``) a randomly initialised bf16 Llama of
benchmarks/merger.py's "250M" shape (hidden 1024, 16 layers, GQA 16/4, vocab 32000) with the
zoo's tokenizer (its ids fit the vocabulary), then runs the whole command (imports, model load
and writing the file included) under ``/usr/bin/time -v``, torch's default threads, for Grams
alone on ``--samples`` examples and Grams + Fisher on ``--fisher-samples``: wall, user and
system seconds and peak RSS of each.
"""

from __future__ import annotations

import argparse
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from alloykit.calibrate import calibrate
from alloykit.evaluate import load_model

ROOT = Path(__file__).resolve().parents[1]
TIME_FIELDS = {
    "wall": "Elapsed (wall clock) time (h:mm:ss or m:ss)",
    "user": "User time (seconds)",
    "system": "System time (seconds)",
    "rss_kb": "Maximum resident set size (kbytes)",
}


def zoo_timings(zoo: Path, tasks: list[str], samples: int) -> None:
    torch.set_num_threads(1)
    base = zoo / "base"
    load_model(base)
    with tempfile.TemporaryDirectory() as scratch:
        for kinds in (["gram"], ["gram", "fisher"]):
            for task in tasks:
                wall, cpu = time.perf_counter(), time.process_time()
                out = Path(scratch) / f"{task}.safetensors"
                calibrate(base, zoo / "tasks" / task, out, kinds=kinds, samples=samples)
                print(
                    f"{task:10s} {','.join(kinds):12s} wall {time.perf_counter() - wall:6.2f} s"
                    f"  cpu {time.process_time() - cpu:6.2f} s",
                    flush=True,
                )
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


def build_250m(directory: Path, zoo: Path) -> Path:
    """The "250M" Llama of benchmarks/merger.py in bf16, with the zoo's tokenizer (built once)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from merger import SIZES

    from alloykit.tiny_models import build_model

    if not (directory / "tokenizer.json").exists():
        build_model("llama", directory, seed=0, dtype=torch.bfloat16, **SIZES["250M"])
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(zoo / "base" / name, directory / name)
    return directory


def timed_command(command: list[str]) -> dict[str, float]:
    """Run ``command`` under ``/usr/bin/time -v``; its wall, user, system seconds and peak RSS."""
    done = subprocess.run(
        ["/usr/bin/time", "-v", *command], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    values: dict[str, float] = {}
    for key, label in TIME_FIELDS.items():
        match = re.search(re.escape(label) + r": (\S+)", done.stderr)
        assert match is not None, done.stderr
        text = match.group(1)
        if key == "wall":
            seconds = 0.0
            for part in text.split(":"):
                seconds = seconds * 60 + float(part)
            values[key] = seconds
        else:
            values[key] = float(text)
    return values


def model_timings(model: Path, data: Path, samples: int, fisher_samples: int) -> None:
    alloykit = str(Path(sys.executable).with_name("alloykit"))
    with tempfile.TemporaryDirectory() as scratch:
        for kinds, count in (("gram", samples), ("gram,fisher", fisher_samples)):
            out = Path(scratch) / "stats.safetensors"
            command = [alloykit, "calibrate", str(model), "--data", str(data), "--out", str(out)]
            run = timed_command([*command, "--samples", str(count), "--kinds", kinds])
            print(
                f"{kinds:12s} {count:4d} examples  wall {run['wall']:7.1f} s  user "
                f"{run['user']:7.1f} s  sys {run['system']:6.1f} s  peak RSS "
                f"{run['rss_kb'] / 1024**2:5.2f} GB  file {out.stat().st_size / 1e9:.2f} GB",
                flush=True,
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--zoo", type=Path, default=ROOT / "examples" / "zoo")
    parser.add_argument("--tasks", default="sort,reverse")
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--size", choices=["250M"], help="time a built model of this size")
    parser.add_argument("--fisher-samples", type=int, default=64)
    parser.add_argument("--cache", type=Path, default=ROOT / ".benchcache" / "calibration")
    args = parser.parse_args(argv)
    tasks = args.tasks.split(",")
    if args.size is None:
        zoo_timings(args.zoo, tasks, args.samples)
        return 0
    model = build_250m(args.cache / args.size, args.zoo)
    model_timings(model, args.zoo / "tasks" / tasks[0], args.samples, args.fisher_samples)
    return 0


if __name__ == "__main__":
    sys.exit(main())
