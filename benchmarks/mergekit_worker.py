"""A long-lived mergekit merger for ``benchmarks/search.py``'s disk-path loop.

    /path/to/mergekit-venv/bin/python benchmarks/mergekit_worker.py OUT_DIR [--no-tokenizer]

Runs under mergekit's own interpreter (mergekit is not an alloykit dependency). It imports
mergekit once and answers ``ready``; then, for each recipe path read from stdin, it merges the
recipe in-process into ``OUT_DIR`` with ``mergekit.merge.run_merge`` (what Mergenetic and
mergekit-evolve's on-disk mode do per candidate) and answers ``done WALL CPU``: that merge's
wall and CPU seconds of this process, so a search's one-time start-up and imports stay out of a
candidate's cost. ``--no-tokenizer`` turns off copying the base's tokenizer, for models that
have none (mergekit would otherwise try, fail and go on, each merge). A failed merge answers
``error MESSAGE`` on one line and the worker goes on.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def main() -> int:
    out = sys.argv[1]
    copy_tokenizer = "--no-tokenizer" not in sys.argv[2:]
    import yaml
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge

    options = MergeOptions(copy_tokenizer=copy_tokenizer, quiet=True, num_threads=1)
    print("ready", flush=True)
    for line in sys.stdin:
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            recipe = yaml.safe_load(Path(line.strip()).read_text())
            run_merge(MergeConfiguration.model_validate(recipe), out, options)
        except Exception as error:  # reported to the benchmark, which stops on it
            print(f"error {type(error).__name__}: {error}".replace("\n", " "), flush=True)
            continue
        print(f"done {time.perf_counter() - wall:.6f} {time.process_time() - cpu:.6f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
