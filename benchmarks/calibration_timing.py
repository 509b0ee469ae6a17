"""Time ``alloykit.calibrate.calibrate`` on the zoo's base, 256 examples per task.

    python benchmarks/calibration_timing.py [--zoo examples/zoo] [--tasks sort,reverse]

Imports and a first model load are done before timing; one torch thread (the zoo's model is
1.1 M parameters). Prints wall and CPU seconds per task for Grams alone and Grams + Fisher,
and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

from alloykit.calibrate import calibrate
from alloykit.evaluate import load_model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    zoo = Path(__file__).resolve().parents[1] / "examples" / "zoo"
    parser.add_argument("--zoo", type=Path, default=zoo)
    parser.add_argument("--tasks", default="sort,reverse")
    parser.add_argument("--samples", type=int, default=256)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    base = args.zoo / "base"
    load_model(base)
    with tempfile.TemporaryDirectory() as scratch:
        for kinds in (["gram"], ["gram", "fisher"]):
            for task in args.tasks.split(","):
                wall, cpu = time.perf_counter(), time.process_time()
                out = Path(scratch) / f"{task}.safetensors"
                calibrate(base, args.zoo / "tasks" / task, out, kinds=kinds, samples=args.samples)
                print(
                    f"{task:10s} {','.join(kinds):12s} wall {time.perf_counter() - wall:6.2f} s"
                    f"  cpu {time.process_time() - cpu:6.2f} s",
                    flush=True,
                )
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
