"""The search loop: ask the optimizer for candidates, merge and score them on the workers,
journal each one, tell the optimizer; then write the best recipe and its held-out scores.

The driver owns the optimizer and the journal; workers own models (:mod:`.workers`). A rerun
with the same spec and output directory replays the journal (:mod:`.journal`) and evaluates
only the candidates that are missing.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alloykit.atomic_files import written_whole
from alloykit.search.fitness import Fitness, Responses
from alloykit.search.journal import Journal, Trial
from alloykit.search.optimizers import ONE_PER_WORKER, Optimizer, make_optimizer
from alloykit.search.space import Point, Space
from alloykit.search.spec import SearchSpec, SpecError, load_spec
from alloykit.search.workers import Backend, Job, make_backend

OnTrial = Callable[[Trial, int, int], None]
"""``on_trial(trial, done, total)`` after every scored (or replayed) candidate."""
CHECKED_CANDIDATES = 3
"""Top candidates re-run on the full validation split to measure the estimator's error."""


@dataclass
class SearchResult:
    out: Path
    trials: list[Trial]
    best: Trial
    recipe: dict[str, Any]
    test_scores: dict[str, float]
    estimator_check: list[dict[str, float]]
    seconds: float
    evaluated: int
    """Candidates evaluated by this run (the rest were replayed from the journal)."""


def run_search(
    spec: SearchSpec | str | Path | dict[str, Any],
    out: str | Path,
    *,
    workers: int = 1,
    device: str = "cpu",
    use_ray: bool = False,
    ray_address: str | None = None,
    write_best: bool = False,
    on_trial: OnTrial | None = None,
) -> SearchResult:
    """Search ``spec``'s space into ``out`` (trials.jsonl, best.yml, trials.csv, report.md,
    and with ``write_best`` the best merge in ``out/model``); resumes a stopped search."""
    from alloykit.search import report

    started = time.perf_counter()
    spec = spec if isinstance(spec, SearchSpec) else load_spec(spec)
    out = Path(out)
    space = Space(spec)
    _check_recipes(space)
    fitness = Fitness(spec)
    journal = Journal(out / "trials.jsonl", spec.fingerprint())
    backend = make_backend(
        spec,
        _template(space),
        device=device,
        workers=workers,
        ray_address=ray_address,
        use_ray=use_ray,
    )
    try:
        if fitness.needs_anchors:
            fitness.fit_anchors(anchor_responses(spec, out, backend))
        objectives = len(fitness.objectives({name: 0.0 for name in fitness.tasks}))
        population = spec.population or (workers if spec.optimizer in ONE_PER_WORKER else None)
        optimizer = make_optimizer(
            spec.optimizer, space.dimensions, objectives, seed=spec.seed, population=population
        )
        evaluated = _search(spec, space, fitness, optimizer, backend, journal, on_trial)
        trials = journal.ordered()[: spec.trials]
        best = max(trials, key=lambda t: t.fitness)
        recipe = space.recipe(best.point)
        check = _estimator_check(spec, space, fitness, backend, trials)
        test_scores = _test_scores(spec, backend, recipe)
    finally:
        backend.close()
    result = SearchResult(
        out, trials, best, recipe, test_scores, check, time.perf_counter() - started, evaluated
    )
    report.write(result, spec, space)
    if write_best:
        from alloykit.api import merge

        merge(recipe, out / "model", force=True)
    return result


def _search(
    spec: SearchSpec,
    space: Space,
    fitness: Fitness,
    optimizer: Optimizer,
    backend: Backend,
    journal: Journal,
    on_trial: OnTrial | None,
) -> int:
    done = evaluated = 0
    while done < spec.trials:
        asked = optimizer.ask()
        batch = asked[: spec.trials - done]
        points = [space.point(units) for units in batch]
        objectives: list[list[float] | None] = [None] * len(batch)
        jobs, positions = [], []
        for k, point in enumerate(points):
            recorded = journal.trials.get(done + k)
            if recorded is None:
                jobs.append(Job(fitness.requests(), recipe=space.recipe(point)))
                positions.append(k)
                continue
            if recorded.point != point:
                raise SpecError(
                    f"{journal.path}: trial {recorded.trial} was {recorded.point}, but the "
                    f"search now asks for {point}",
                    "the spec, seed or library versions changed: use a new output directory",
                )
            objectives[k] = recorded.objectives
            if on_trial is not None:
                on_trial(recorded, done + k + 1, spec.trials)
        for finished in backend.run(jobs):
            k = positions[finished.index]
            scores = fitness.scores(finished.responses)
            values = fitness.objectives(scores)
            trial = Trial(
                trial=done + k,
                point=points[k],
                scores=scores,
                objectives=values,
                fitness=sum(scores.values()) / len(scores),
                seconds=round(finished.seconds, 3),
                estimator=fitness.estimator,
            )
            journal.record(trial)
            objectives[k] = values
            evaluated += 1
            if on_trial is not None:
                on_trial(trial, len(journal.trials), spec.trials)
        if len(batch) == len(asked):  # a batch cut by the budget ends the search untold
            optimizer.tell(batch, [values or [] for values in objectives])
        done += len(batch)
    return evaluated


def _check_recipes(space: Space) -> None:
    """Plan the recipe of the middle of the space for every method, so that a spec that cannot
    merge fails before any candidate is scored."""
    from alloykit.api import plan

    for method in space.methods:
        point: Point = {gene.name: gene.value(0.5) for gene in space.genes}
        if space.choice is not None:
            point["method"] = method
        plan(space.recipe(point))


def _endpoint_plan(space: Space):
    """The plan of the space's lowest point with the first method: its sources are the
    endpoints every candidate lies between (the base and each merged model)."""
    from alloykit.api import plan

    point: Point = {gene.name: gene.low for gene in space.genes}
    if space.choice is not None:
        point["method"] = space.methods[0]
    return plan(space.recipe(point))


def _template(space: Space) -> str:
    """The checkpoint whose architecture the candidates take: the plan's reference model."""
    planned = _endpoint_plan(space)
    return str(planned.sources[planned.reference].root)


def anchor_responses(spec: SearchSpec, out: Path, backend: Backend) -> dict[str, Responses]:
    """The full responses on the search split of the endpoints and of the spec's calibration
    candidates (``calibration 0``, ...), that the IRT items are fitted on; cached in
    ``out/anchors.json`` for this spec."""
    space, fitness = Space(spec), Fitness(spec)
    cache = out / "anchors.json"
    key = spec.fingerprint()
    if cache.exists():
        try:
            stored = json.loads(cache.read_text())
        except (OSError, ValueError):
            stored = {}  # unreadable (not written by this version): computed again below
        if stored.get("spec") == key:
            return stored["responses"]
    planned = _endpoint_plan(space)
    paths = {ref: str(source.root) for ref, source in planned.sources.items()}
    jobs = [Job(fitness.full_requests(), model=path) for path in paths.values()]
    names = list(paths)
    for k, point in enumerate(calibration_points(spec, space)):
        jobs.append(Job(fitness.full_requests(), recipe=space.recipe(point)))
        names.append(f"calibration {k}")
    responses = {names[done.index]: done.responses for done in backend.run(jobs)}
    ordered = {name: responses[name] for name in names}
    with written_whole(cache) as partial:  # a search killed while writing computes it again
        partial.write_text(json.dumps({"spec": key, "responses": ordered}))
    return ordered


def calibration_points(spec: SearchSpec, space: Space) -> list[Point]:
    """The spec's calibration candidates: uniform over the space, from their own seed (so
    they are the same in every run and do not shift the optimizer's draws)."""
    rng = random.Random(f"{spec.seed}:calibration")
    count = spec.fitness.calibration
    return [space.point([rng.random() for _ in range(space.dimensions)]) for _ in range(count)]


def _estimator_check(
    spec: SearchSpec, space: Space, fitness: Fitness, backend: Backend, trials: list[Trial]
) -> list[dict[str, float]]:
    """The estimate against the full-split accuracy for the top candidates (nothing to check
    when every candidate ran the full split)."""
    if fitness.estimator == "full":
        return []
    top = sorted(trials, key=lambda t: t.fitness, reverse=True)[:CHECKED_CANDIDATES]
    jobs = [Job(fitness.full_requests(), recipe=space.recipe(t.point)) for t in top]
    rows = []
    for done in backend.run(jobs):
        trial = top[done.index]
        full = {name: sum(r) / len(r) for name, r in done.responses.items()}
        rows.append(
            {
                "trial": trial.trial,
                "estimate": trial.fitness,
                "full": sum(full.values()) / len(full),
            }
        )
    return sorted(rows, key=lambda row: row["trial"])


def _test_scores(spec: SearchSpec, backend: Backend, recipe: dict[str, Any]) -> dict[str, float]:
    """The best recipe's accuracy on each task's held-out split (every example)."""
    test = Fitness(held_out(spec))
    (done,) = list(backend.run([Job(test.full_requests(), recipe=recipe, split="test")]))
    return {name: sum(r) / len(r) for name, r in done.responses.items()}


def held_out(spec: SearchSpec) -> SearchSpec:
    """The spec scoring every example of the held-out split (which the search never sees)."""
    fitness = spec.fitness.model_copy(
        update={"split": spec.test_split, "estimator": "full", "limit": None}
    )
    return spec.model_copy(update={"fitness": fitness})
