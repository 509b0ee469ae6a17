"""A search candidate's fitness through lm-eval against alloykit's own tasks, side by side.

    python benchmarks/harness_fitness.py [--candidates 5] [--subset 0.1]

Writes each example-zoo task in lm-eval's YAML format (``generate_until``, stop at a newline,
the task's token budget, leading whitespace removed, ``exact_match``) into a scratch folder,
then scores the same random task-arithmetic candidates of the zoo's 8 experts, merged in memory
by one search worker each, on the same documents of the validation split: once as
``lm_eval:zoo_TASK`` tasks (lm-eval's ``simple_evaluate`` on the resident model, generating
every answer) and once as alloykit's tasks (teacher-forced exact match, tasks sharing batches).
Prints CPU and wall seconds per candidate (after one untimed candidate each) and how many
verdicts agree. Needs the ``lm-eval`` and ``search`` extras.

With ``--mergekit-python PATH`` (a venv's python with mergekit) it then times, side by side
(``benchmarks/candidate_loops.py``: loops alternating, medians of ``--rounds``), a candidate
of alloykit's search loop (merged in memory, scored on alloykit's tasks) against the loop
mergekit-evolve and Mergenetic run for each candidate: mergekit's ``run_merge`` to disk, the
checkpoint loaded back, lm-eval's ``simple_evaluate`` on the same documents. Two more loops
separate the two savings (no disk round trip; teacher-forced exact match instead of
generating every answer): the in-memory merge scored through lm-eval, and mergekit's disk loop
scored on alloykit's tasks.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "examples" / "zoo"


def harness_yaml(task_dir: Path, name: str) -> dict:
    """lm-eval's definition of a zoo generation task, scored as alloykit scores it."""
    budget = yaml.safe_load((task_dir / "task.yaml").read_text())["max_new_tokens"]
    return {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {
            "data_files": {s: str(task_dir / f"{s}.jsonl") for s in ("validation", "test")}
        },
        "validation_split": "validation",
        "test_split": "test",
        "output_type": "generate_until",
        "doc_to_text": "{{prompt}}",
        "doc_to_target": "{{answer}}",
        "generation_kwargs": {"until": ["\n"], "do_sample": False, "max_gen_toks": budget},
        "metric_list": [{"metric": "exact_match"}],
        "filter_list": [
            {
                "name": "strip",
                "filter": [{"function": "remove_whitespace"}, {"function": "take_first"}],
            }
        ],
    }


def spec_of(skills: list[str], tasks: list[str], include: Path, subset: float):
    from alloykit.search import load_spec

    return load_spec(
        {
            "recipe": {
                "merge_method": "task_arithmetic",
                "base_model": str(ZOO / "base"),
                "models": [
                    {
                        "model": str(ZOO / "experts" / s),
                        "parameters": {"weight": {"min": 0, "max": 1.5}},
                    }
                    for s in skills
                ],
                "dtype": "float32",
            },
            "tasks": tasks,
            "lm_eval_include": str(include),
            "fitness": {"estimator": "subset", "subset": subset, "batch_size": 128},
        }
    )


def timed(worker, job_of, recipes) -> tuple[float, float, list]:
    """CPU and wall seconds per candidate after an untimed first one, and the responses."""
    worker.run(job_of(recipes[0]))
    cpu, wall = time.process_time(), time.perf_counter()
    responses = [worker.run(job_of(recipe)) for recipe in recipes[1:]]
    count = len(recipes) - 1
    return (time.process_time() - cpu) / count, (time.perf_counter() - wall) / count, responses


def evolve_loops(
    python: Path, harness_worker, native_worker, documents: dict, recipes: list, rounds: int
) -> dict:
    """alloykit's search loop against mergekit-evolve's disk loop (``--mergekit-python``)."""
    import shutil
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from candidate_loops import InMemory, MergekitDisk, compare, lines

    from alloykit.search.workers import Job

    def native(model) -> dict:
        same = {name.removeprefix("zoo_"): indices for name, indices in documents.items()}
        return native_worker.answers(model, native_worker.tokenizer, Job(same))

    def harness(model) -> dict:
        hits = harness_worker.answers(model, harness_worker.tokenizer, Job(documents))
        return {name.removeprefix("zoo_"): verdicts for name, verdicts in hits.items()}

    scratch = Path(tempfile.mkdtemp(prefix="alloykit-evolve-bench-"))
    for folder in ("native", "lm-eval"):
        (scratch / folder).mkdir()
    ours = InMemory(native_worker.merge, native_worker.model, native)
    ours.name = "alloykit search (in memory, alloykit tasks)"
    in_memory_lm_eval = InMemory(harness_worker.merge, harness_worker.model, harness)
    in_memory_lm_eval.name = "in memory, lm-eval"
    disk_ours = MergekitDisk(python, native, scratch / "native")
    disk_ours.name = "mergekit disk + reload, alloykit tasks"
    evolve = MergekitDisk(python, harness, scratch / "lm-eval")
    evolve.name = "mergekit disk + reload, lm-eval (mergekit-evolve, Mergenetic)"
    loops = [ours, in_memory_lm_eval, disk_ours, evolve]
    try:
        result = compare(loops, recipes[0], recipes[1:], rounds)
    finally:
        for loop in loops:
            loop.close()
        shutil.rmtree(scratch, ignore_errors=True)
    print(lines(result, ours.name))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=5)
    parser.add_argument("--subset", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mergekit-python", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

    from alloykit.search.fitness import Fitness
    from alloykit.search.space import Space
    from alloykit.search.workers import CandidateWorker, Job

    skills = sorted(p.name for p in (ZOO / "experts").iterdir() if p.is_dir())
    with tempfile.TemporaryDirectory(prefix="alloykit-harness-") as scratch:
        include = Path(scratch)
        for skill in skills:
            definition = harness_yaml(ZOO / "tasks" / skill, f"zoo_{skill}")
            (include / f"zoo_{skill}.yaml").write_text(yaml.safe_dump(definition))
        harness = spec_of(skills, [f"lm_eval:zoo_{s}" for s in skills], include, args.subset)
        native = spec_of(skills, [str(ZOO / "tasks" / s) for s in skills], include, args.subset)
        documents = Fitness(harness).requests()
        space = Space(native)
        rng = np.random.default_rng(args.seed)
        recipes = [
            space.recipe(space.point(list(rng.random(space.dimensions))))
            for _ in range(args.candidates + 1)
        ]
        base = str(ZOO / "base")
        harness_worker = CandidateWorker(harness, base)
        native_worker = CandidateWorker(native, base)
        lm_eval = timed(harness_worker, lambda r: Job(documents, recipe=r), recipes)
        same = {s: documents[f"zoo_{s}"] for s in skills}
        ours = timed(native_worker, lambda r: Job(same, recipe=r), recipes)
        evolve = None
        if args.mergekit_python is not None:
            evolve = evolve_loops(
                args.mergekit_python,
                harness_worker,
                native_worker,
                documents,
                recipes,
                args.rounds,
            )
    agree = sum(
        a == b
        for theirs, mine in zip(lm_eval[2], ours[2], strict=True)
        for s in skills
        for a, b in zip(theirs[f"zoo_{s}"], mine[s], strict=True)
    )
    total = sum(len(v) for v in same.values()) * args.candidates
    result = {
        "candidates": args.candidates,
        "examples_per_candidate": sum(len(v) for v in same.values()),
        "lm_eval": {"cpu_seconds": lm_eval[0], "wall_seconds": lm_eval[1]},
        "alloykit": {"cpu_seconds": ours[0], "wall_seconds": ours[1]},
        "verdicts_agreeing": agree,
        "verdicts": total,
    }
    if evolve is not None:
        result["loops"] = evolve
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(
        f"per candidate: lm-eval {lm_eval[0]:.3f} CPU s ({lm_eval[1]:.3f} wall), alloykit "
        f"{ours[0]:.3f} CPU s ({ours[1]:.3f} wall): {lm_eval[0] / ours[0]:.1f}x CPU; "
        f"{agree} of {total} verdicts agree"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
