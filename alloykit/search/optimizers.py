"""Optimizers from well-kept libraries behind one ask/tell interface over the unit cube.

Every optimizer proposes points as lists of numbers in [0, 1] (one per dimension of the
:class:`~alloykit.search.space.Space`) and is told the objectives of each, larger being better.
Each is seeded and deterministic given the same sequence of tells, which is how a resumed
search replays its journal: ask, compare with the recorded point, tell the recorded score.

- ``cma``: CMA-ES (the ``cma`` package), one objective;
- ``sep_cma``: separable CMA-ES (a diagonal covariance, Ros & Hansen, "A Simple
  Modification in CMA-ES Achieving Linear Time and Space Complexity", PPSN 2008): it adapts its
  step sizes about as many times faster as there are genes, which is what a budget of a few
  hundred candidates over tens of genes (per-layer or per-filter weights) needs;
- ``gp``: Bayesian optimization with a Gaussian process (Optuna's ``GPSampler``: a Matérn-5/2
  kernel with a length scale per gene, log expected improvement), one objective. It models
  every candidate scored so far, so it needs far fewer candidates than CMA-ES, which only
  starts adapting after a few generations, while each proposal costs a kernel fit that grows
  with the candidates scored: the right trade when a candidate costs seconds and the budget is
  a few candidates per gene. Pending candidates of a batch count in its acquisition, so
  workers are not handed the same point;
- ``nsga2``: NSGA-II (``pymoo``), one objective per task;
- ``tpe`` / ``random``: Optuna's TPE or random sampler, one or several objectives.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from alloykit.errors import AlloyError

Units = list[float]
NSGA2_POPULATION = 16
SINGLE_OBJECTIVE = ("cma", "sep_cma", "gp")
"""Optimizers that take one objective (``objective: mean``)."""
ONE_PER_WORKER = ("tpe", "gp", "random")
"""Optimizers with no generation of their own: a search asks one candidate per worker."""


class Optimizer(Protocol):
    def ask(self) -> list[Units]:
        """The next batch of points to evaluate (all of them before the next ``tell``)."""
        ...

    def tell(self, points: list[Units], objectives: list[list[float]]) -> None:
        """The objectives (larger is better) of every point of the last batch, in order."""
        ...


def make_optimizer(
    name: str, dimensions: int, objectives: int, *, seed: int, population: int | None
) -> Optimizer:
    """The optimizer called ``name``; its package must be installed (the ``search`` extra)."""
    try:
        if name in ("cma", "sep_cma"):
            return CMAES(dimensions, seed=seed, population=population, diagonal=name == "sep_cma")
        if name == "nsga2":
            return NSGA2(dimensions, objectives, seed=seed, population=population)
        if name in ("tpe", "gp", "random"):
            return OptunaSampler(dimensions, objectives, seed=seed, kind=name, batch=population)
    except ImportError as exc:
        raise AlloyError(
            f"optimizer {name!r} needs the package {exc.name!r}",
            "install the search extra: pip install 'alloykit[search]'",
        ) from None
    raise AlloyError(f"unknown optimizer {name!r}", "use cma, sep_cma, nsga2, tpe, gp or random")


class CMAES:
    """CMA-ES from the middle of the cube with step 0.3, bounded to [0, 1]; with ``diagonal``
    the separable variant (pycma's ``CMA_diagonal``).

    CMA-ES needs two dimensions at least: a one-gene space gets a second, ignored one."""

    def __init__(
        self, dimensions: int, *, seed: int, population: int | None, diagonal: bool = False
    ) -> None:
        import cma

        self.dimensions = dimensions
        options: dict[str, Any] = {"bounds": [0, 1], "seed": seed + 1, "verbose": -9}
        if diagonal:
            options["CMA_diagonal"] = True
        if population is not None:
            options["popsize"] = population
        self.strategy = cma.CMAEvolutionStrategy([0.5] * max(2, dimensions), 0.3, options)
        self._asked: list[Any] = []

    def ask(self) -> list[Units]:
        self._asked = self.strategy.ask()
        return [[float(v) for v in x[: self.dimensions]] for x in self._asked]

    def tell(self, points: list[Units], objectives: list[list[float]]) -> None:
        self.strategy.tell(self._asked, [-values[0] for values in objectives])


class NSGA2:
    """NSGA-II through pymoo's ask/tell interface (it minimizes: objectives are negated)."""

    def __init__(
        self, dimensions: int, objectives: int, *, seed: int, population: int | None
    ) -> None:
        from pymoo.algorithms.moo.nsga2 import NSGA2 as Algorithm
        from pymoo.core.problem import Problem

        self.problem = Problem(n_var=dimensions, n_obj=objectives, xl=0.0, xu=1.0)
        self.algorithm = Algorithm(pop_size=population or NSGA2_POPULATION)
        self.algorithm.setup(self.problem, termination=("n_gen", 10**9), seed=seed, verbose=False)
        self._asked: Any = None

    def ask(self) -> list[Units]:
        self._asked = self.algorithm.ask()
        return [[float(v) for v in x] for x in self._asked.get("X")]

    def tell(self, points: list[Units], objectives: list[list[float]]) -> None:
        import numpy as np
        from pymoo.core.evaluator import Evaluator
        from pymoo.problems.static import StaticProblem

        values = -np.asarray(objectives, dtype=float)
        Evaluator().eval(StaticProblem(self.problem, F=values), self._asked)
        self.algorithm.tell(infills=self._asked)


class OptunaSampler:
    """Optuna's TPE, GP or random sampler (``kind``); ``batch`` trials are asked for at once."""

    def __init__(
        self, dimensions: int, objectives: int, *, seed: int, kind: str, batch: int | None
    ) -> None:
        import optuna

        self.optuna = optuna
        self.dimensions = dimensions
        self.batch = batch or 1
        if kind == "random":
            sampler = optuna.samplers.RandomSampler(seed=seed)
        elif kind == "gp":
            sampler = optuna.samplers.GPSampler(seed=seed)
        else:
            sampler = optuna.samplers.TPESampler(seed=seed, multivariate=dimensions > 1)
        with _quiet("optuna"):
            self.study = optuna.create_study(directions=["maximize"] * objectives, sampler=sampler)
        self._asked: list[Any] = []

    def ask(self) -> list[Units]:
        with _quiet("optuna"):
            self._asked = [self.study.ask() for _ in range(self.batch)]
            return [
                [trial.suggest_float(f"x{i}", 0.0, 1.0) for i in range(self.dimensions)]
                for trial in self._asked
            ]

    def tell(self, points: list[Units], objectives: list[list[float]]) -> None:
        with _quiet("optuna"):
            for trial, values in zip(self._asked, objectives, strict=True):
                self.study.tell(trial, values if len(values) > 1 else values[0])


@contextmanager
def _quiet(logger: str) -> Iterator[None]:
    """A library's per-trial log lines off while it runs, and its level restored after (library
    code leaves process-wide state as it found it)."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        log.setLevel(level)
