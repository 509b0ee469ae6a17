"""What a search leaves in its output directory besides the journal: ``best.yml`` (a plain
mergekit-format recipe), ``trials.csv``, ``report.md`` with the best recipe's held-out scores
and the estimator's measured error, and charts (``progress.png``; ``pareto.png`` for several
objectives) when matplotlib is installed."""

from __future__ import annotations

import csv
from typing import TYPE_CHECKING

import yaml

from alloykit.search.journal import Trial

if TYPE_CHECKING:
    from alloykit.search.run import SearchResult
    from alloykit.search.space import Space
    from alloykit.search.spec import SearchSpec


def write(result: SearchResult, spec: SearchSpec, space: Space) -> None:
    out = result.out
    (out / "best.yml").write_text(yaml.safe_dump(result.recipe, sort_keys=False))
    _write_csv(result, space)
    charts = _write_charts(result, spec)
    (out / "report.md").write_text(_markdown(result, spec, space, charts))


def pareto_front(trials: list[Trial]) -> list[Trial]:
    """The trials no other trial beats or equals on every objective while beating on one."""

    def dominates(a: Trial, b: Trial) -> bool:
        pairs = list(zip(a.objectives, b.objectives, strict=True))
        return all(x >= y for x, y in pairs) and any(x > y for x, y in pairs)

    return [t for t in trials if not any(dominates(o, t) for o in trials if o is not t)]


def _write_csv(result: SearchResult, space: Space) -> None:
    tasks = list(result.best.scores)
    genes = [g.name for g in space.genes] + (["method"] if space.choice is not None else [])
    with (result.out / "trials.csv").open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["trial", "fitness", *tasks, *genes, "seconds"])
        for trial in result.trials:
            writer.writerow(
                [
                    trial.trial,
                    f"{trial.fitness:.6f}",
                    *(f"{trial.scores[t]:.6f}" for t in tasks),
                    *(trial.point.get(g, "") for g in genes),
                    trial.seconds,
                ]
            )


def _write_charts(result: SearchResult, spec: SearchSpec) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written = []
    figure, axes = plt.subplots(figsize=(6, 3.5))
    fitness = [t.fitness for t in result.trials]
    best = [max(fitness[: i + 1]) for i in range(len(fitness))]
    axes.scatter(range(len(fitness)), fitness, s=8, alpha=0.5, label="candidate")
    axes.plot(best, color="black", label="best so far")
    axes.set_xlabel("trial")
    axes.set_ylabel(f"mean accuracy ({spec.fitness.split}, {spec.fitness.estimator})")
    axes.legend()
    figure.tight_layout()
    figure.savefig(result.out / "progress.png", dpi=120)
    plt.close(figure)
    written.append("progress.png")
    tasks = list(result.best.scores)
    if spec.objective == "per_task" and len(tasks) >= 2:
        front = pareto_front(result.trials)
        figure, axes = plt.subplots(figsize=(4.5, 4.5))
        axes.scatter([t.scores[tasks[0]] for t in result.trials],
                     [t.scores[tasks[1]] for t in result.trials], s=8, alpha=0.4,
                     label="candidate")  # fmt: skip
        axes.scatter([t.scores[tasks[0]] for t in front], [t.scores[tasks[1]] for t in front],
                     s=18, color="red", label="Pareto front (all objectives)")  # fmt: skip
        axes.set_xlabel(tasks[0])
        axes.set_ylabel(tasks[1])
        axes.legend()
        figure.tight_layout()
        figure.savefig(result.out / "pareto.png", dpi=120)
        plt.close(figure)
        written.append("pareto.png")
    return written


def _markdown(result: SearchResult, spec: SearchSpec, space: Space, charts: list[str]) -> str:
    best = result.best
    tasks = list(best.scores)
    lines = [
        "# Search report",
        "",
        f"{len(result.trials)} candidates ({result.evaluated} evaluated by the last run, the "
        f"rest replayed from trials.jsonl), optimizer {spec.optimizer}, objective "
        f"{spec.objective}, fitness on the {spec.fitness.split!r} split by the "
        f"{spec.fitness.estimator!r} estimator{_calibration(spec)}; {result.seconds:.0f} s.",
        "",
        "## Search space",
        "",
        *(f"- {line}" for line in space.describe()),
        "",
        f"## Best candidate: trial {best.trial}",
        "",
        "| split | " + " | ".join(tasks) + " | mean |",
        "|" + " --- |" * (len(tasks) + 2),
        _row(f"{spec.fitness.split} (estimated)", best.scores, tasks),
        _row(f"{spec.test_split} (held out, every example)", result.test_scores, tasks),
        "",
        "Its recipe is `best.yml`:",
        "",
        "```yaml",
        yaml.safe_dump(result.recipe, sort_keys=False).rstrip(),
        "```",
    ]
    if result.estimator_check:
        errors = [abs(row["estimate"] - row["full"]) for row in result.estimator_check]
        lines += [
            "",
            "## Estimator check",
            "",
            f"The top candidates re-run on every {spec.fitness.split!r} example: mean absolute "
            f"error of the {spec.fitness.estimator!r} estimate "
            f"{100 * sum(errors) / len(errors):.1f} points.",
            "",
            "| trial | estimate | full split |",
            "| --- | --- | --- |",
            *(
                f"| {int(row['trial'])} | {100 * row['estimate']:.1f} | {100 * row['full']:.1f} |"
                for row in result.estimator_check
            ),
        ]
    if charts:
        lines += ["", *(f"![{name}]({name})" for name in charts)]
    return "\n".join(lines) + "\n"


def _calibration(spec: SearchSpec) -> str:
    """How the IRT items were fitted, where they were: the extra full evaluations count."""
    if spec.fitness.estimator != "irt":
        return ""
    return (
        f" (items fitted on the endpoints and {spec.fitness.calibration} calibration "
        "candidates, each run on every example)"
    )


def _row(label: str, scores: dict[str, float], tasks: list[str]) -> str:
    mean = sum(scores[t] for t in tasks) / len(tasks)
    cells = " | ".join(f"{100 * scores[t]:.1f}" for t in tasks)
    return f"| {label} | {cells} | {100 * mean:.1f} |"
