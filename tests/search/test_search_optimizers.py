"""Optimizers: each finds the top of a simple objective, and replays the same way from a seed."""

from __future__ import annotations

import pytest

from alloykit.search.optimizers import make_optimizer

pytest.importorskip("cma", reason="the search extra is not installed")
pytest.importorskip("optuna", reason="the search extra is not installed")
pytest.importorskip("pymoo", reason="the search extra is not installed")

TARGET = [0.3, 0.7]


def objective(units: list[float]) -> list[float]:
    return [-sum((u - t) ** 2 for u, t in zip(units, TARGET, strict=True))]


def run(name: str, evaluations: int, seed: int = 0) -> list[list[float]]:
    optimizer = make_optimizer(name, 2, 1, seed=seed, population=None if name == "cma" else 4)
    asked: list[list[float]] = []
    while len(asked) < evaluations:
        batch = optimizer.ask()
        asked.extend(batch)
        optimizer.tell(batch, [objective(units) for units in batch])
    return asked


@pytest.mark.parametrize(("name", "evaluations"), [("cma", 120), ("tpe", 80), ("nsga2", 120)])
def test_each_optimizer_finds_the_top(name: str, evaluations: int) -> None:
    best = max(run(name, evaluations), key=lambda units: objective(units)[0])
    assert objective(best)[0] > -0.01


@pytest.mark.parametrize("name", ["cma", "tpe", "random", "nsga2"])
def test_the_same_seed_asks_the_same_points(name: str) -> None:
    assert run(name, 12, seed=3) == run(name, 12, seed=3)
    assert run(name, 12, seed=3) != run(name, 12, seed=4)


def test_points_stay_in_the_unit_cube() -> None:
    for name in ("cma", "tpe", "random", "nsga2"):
        assert all(0.0 <= u <= 1.0 for units in run(name, 16) for u in units)


def test_a_single_gene_runs_under_cma() -> None:
    optimizer = make_optimizer("cma", 1, 1, seed=0, population=None)
    batch = optimizer.ask()
    assert all(len(units) == 1 for units in batch)
    optimizer.tell(batch, [[-((u[0] - 0.5) ** 2)] for u in batch])


def test_nsga2_takes_several_objectives() -> None:
    optimizer = make_optimizer("nsga2", 2, 2, seed=0, population=4)
    batch = optimizer.ask()
    optimizer.tell(batch, [[u[0], 1 - u[0]] for u in batch])
    assert len(optimizer.ask()) == 4
