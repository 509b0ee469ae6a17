"""``alloykit demo``: the main job on the example zoo.

Merges four zoo experts (each fine-tuned from one base on one skill) with the method and
settings that did best on the zoo's validation splits in ``benchmarks/quality.py``, evaluates
the base, each expert and the merge on those skills' test splits, and prints the table — the
whole loop a user runs with their own checkpoints.
"""

from __future__ import annotations

import time
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

from alloykit.errors import AlloyError

ZOO = Path(__file__).resolve().parents[2] / "examples" / "zoo"
# The 4-expert merge that did best on the zoo's validation splits in benchmarks/quality.py
# (benchmarks/README.md, "Merge quality"): its method and settings.
DEMO_METHOD = "wudi"
DEMO_PARAMETERS: dict[str, object] = {"iterations": 300, "learning_rate": 1e-4}
DEMO_MODEL_PARAMETERS: dict[str, object] = {}


def demo_recipe(zoo: Path, skills: list[str]) -> dict:
    return {
        "merge_method": DEMO_METHOD,
        "base_model": str(zoo / "base"),
        "models": [
            {"model": str(zoo / "experts" / s), "parameters": dict(DEMO_MODEL_PARAMETERS)}
            for s in skills
        ],
        "parameters": dict(DEMO_PARAMETERS),
        "dtype": "float32",
    }


def describe_method() -> str:
    settings = {**DEMO_MODEL_PARAMETERS, **DEMO_PARAMETERS}
    listed = ", ".join(f"{key}={value}" for key, value in settings.items())
    return (
        f"method: {DEMO_METHOD} ({listed}), the best 4-expert merge on the zoo's validation "
        "splits in benchmarks/quality.py"
    )


def run_demo(
    zoo: Path, out: Path, skills: list[str] | None, limit: int | None, console: Console
) -> Path:
    import torch

    from alloykit.api import merge
    from alloykit.evaluate import evaluate, load_task

    torch.set_num_threads(1)  # tiny models run faster on one thread
    experts_dir = zoo / "experts"
    if not experts_dir.is_dir():
        raise AlloyError(
            f"example zoo not found at {zoo}", "rebuild it: python examples/zoo/build.py"
        )
    available = sorted(p.name for p in experts_dir.iterdir() if p.is_dir())
    chosen = skills or available[:4]
    unknown = [s for s in chosen if s not in available]
    if unknown:
        raise AlloyError(
            f"--skills: no expert {unknown[0]!r} in the zoo", f"choose from {', '.join(available)}"
        )
    recipe = demo_recipe(zoo, chosen)
    console.print(describe_method(), markup=False)
    console.print("[bold]recipe[/]")
    console.print(yaml.safe_dump(recipe, sort_keys=False).rstrip(), markup=False)
    start = time.perf_counter()
    merged = merge(recipe, out, force=True)
    console.print(
        f"merged {len(chosen)} experts into {merged} in {time.perf_counter() - start:.1f} s"
    )
    tasks = [load_task(zoo / "tasks" / s) for s in chosen]
    rows: list[tuple[str, list[float]]] = []
    models = [
        ("base", zoo / "base"),
        *((f"expert: {s}", experts_dir / s) for s in chosen),
        ("merge", merged),
    ]
    start = time.perf_counter()
    for label, path in models:
        results = evaluate(path, tasks, split="test", limit=limit)
        rows.append((label, [r.score for r in results]))
    table = Table(title=f"exact match on the test splits ({time.perf_counter() - start:.0f} s)")
    table.add_column("model")
    for skill in chosen:
        table.add_column(skill, justify="right")
    table.add_column("average", justify="right")
    for label, scores in rows:
        table.add_row(
            label, *(f"{100 * s:.1f}" for s in scores), f"{100 * sum(scores) / len(scores):.1f}"
        )
    console.print(table)
    own = [rows[1 + i][1][i] for i in range(len(chosen))]
    merged_scores = rows[-1][1]
    normalized = sum(m / e for m, e in zip(merged_scores, own, strict=True) if e > 0) / len(chosen)
    console.print(
        f"merge keeps {100 * normalized:.1f}% of the experts' own scores (normalized average)"
    )
    return merged
