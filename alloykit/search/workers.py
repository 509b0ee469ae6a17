"""Where candidates are merged and scored: in this process, in local worker processes, or on
the actors of a Ray cluster. Each worker owns one resident model and an in-memory merger per
method, so a candidate costs one merge into the model's parameters plus its examples, never a
checkpoint written and read back.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from alloykit.errors import AlloyError
from alloykit.search.fitness import HARNESS_TASK, Fitness, Requests, Responses
from alloykit.search.spec import SearchSpec

PARALLEL_MERGE_BYTES = 256 * 2**20
"""Resident inputs from which a CPU merge runs on several threads: below it, the example
zoo's 36 MB merge slower on two threads than on one (their hand-offs cost more than they
overlap), above it the 1.1 GB of benchmarks/synthetic.py's 56M family merge faster
(benchmarks/README.md, "Candidate throughput")."""


def merge_threads(device: str, resident_bytes: int) -> int:
    """Threads an in-memory merge spreads its tensors over: on a CPU, once its inputs reach
    :data:`PARALLEL_MERGE_BYTES`, as many as torch computes the fitness with (the process's
    share of the cores: ``--threads``, or one per worker process); else one."""
    import torch

    if device != "cpu" or resident_bytes < PARALLEL_MERGE_BYTES:
        return 1
    return max(1, torch.get_num_threads())


@dataclass(frozen=True)
class Job:
    """One evaluation: a candidate recipe to merge, or a checkpoint to load (the endpoints)."""

    requests: Requests
    recipe: dict[str, Any] | None = None
    model: str | None = None
    split: str = "search"
    """``search``: the spec's search split; ``test``: the held-out split."""


@dataclass(frozen=True)
class Done:
    index: int
    responses: Responses
    seconds: float


class CandidateWorker:
    """A resident model, the mergers that write candidates into it, and the tasks' examples
    (each text tokenized once: every candidate runs the same examples)."""

    def __init__(self, spec: SearchSpec, template: str, device: str = "cpu") -> None:
        from alloykit.evaluate import load_model
        from alloykit.evaluate.remembered import RememberedTokenizer

        self.spec = spec
        self.splits = {"search": Fitness(spec)}
        self.device = device
        self.batch_size = spec.fitness.batch_size
        self.model, tokenizer = load_model(template, device)
        self.tokenizer = RememberedTokenizer(tokenizer)
        self.mergers: dict[str, Any] = {}

    def run(self, job: Job) -> Responses:
        if job.model is not None:
            from alloykit.evaluate import load_model

            model, tokenizer = load_model(job.model, self.device)
            return self.answers(model, tokenizer, job)
        assert job.recipe is not None
        self.merge(job.recipe)
        return self.answers(self.model, self.tokenizer, job)

    def merge(self, recipe: dict[str, Any]) -> None:
        """Write ``recipe``'s merge into the resident model (one merger per method, kept)."""
        from alloykit.merger import Merger

        method = str(recipe["merge_method"])
        merger = self.mergers.get(method)
        if merger is None:
            merger = self.mergers[method] = Merger(recipe, device=self.device)
            merger.options.threads = merge_threads(self.device, merger.resident_bytes)
        merger.merge_into(self.model, recipe)

    def answers(self, model, tokenizer, job: Job) -> Responses:
        """Each requested task's per-example hits; the generation tasks' examples are scored
        together (:func:`~alloykit.evaluate.item_hits_per_task`): a candidate's few examples
        per task fill a few shared batches."""
        from alloykit.evaluate import item_hits_per_task

        split = self.split_named(job.split)
        harness = {n: r for n, r in job.requests.items() if _runs_in_lm_eval(split, n)}
        names = [name for name in job.requests if name not in harness]
        tasks = [
            (split.tasks[name].task, [split.tasks[name].examples[i] for i in job.requests[name]])
            for name in names
        ]
        hits = item_hits_per_task(
            model,
            tokenizer,
            tasks,
            batch_size=self.batch_size,
            strategy=self.spec.fitness.strategy,
        )
        responses = dict(zip(names, hits, strict=True))
        if harness:
            responses |= split.harness.hits(
                model, tokenizer, harness, split.spec.fitness.split, batch_size=self.batch_size
            )
        return {name: responses[name] for name in job.requests}

    def split_named(self, which: str) -> Fitness:
        if which not in self.splits:
            from alloykit.search.run import held_out

            self.splits[which] = Fitness(held_out(self.spec))
        return self.splits[which]


def _runs_in_lm_eval(split: Fitness, name: str) -> bool:
    return split.tasks[name].task.type == HARNESS_TASK


class Backend(Protocol):
    def run(self, jobs: list[Job]) -> Iterator[Done]:
        """Every job's responses, as they finish (in any order)."""
        ...

    def close(self) -> None: ...


class InProcess:
    """One worker in this process (the default: on a small machine, processes would only
    share the same cores)."""

    def __init__(self, spec: SearchSpec, template: str, device: str) -> None:
        self.worker = CandidateWorker(spec, template, device)

    def run(self, jobs: list[Job]) -> Iterator[Done]:
        for index, job in enumerate(jobs):
            start = time.perf_counter()
            responses = self.worker.run(job)
            yield Done(index, responses, time.perf_counter() - start)

    def close(self) -> None:
        """Nothing to release: the worker lives and ends with this process."""


_PROCESS_WORKER: CandidateWorker | None = None


def _start_process(spec: SearchSpec, template: str, device: str, threads: int) -> None:
    import torch

    global _PROCESS_WORKER
    torch.set_num_threads(threads)  # this process is the worker's own
    _PROCESS_WORKER = CandidateWorker(spec, template, device)


def _run_in_process(job: Job) -> tuple[Responses, float]:
    assert _PROCESS_WORKER is not None
    start = time.perf_counter()
    return _PROCESS_WORKER.run(job), time.perf_counter() - start


class Processes:
    """``count`` local worker processes, each with its own resident model."""

    def __init__(
        self, spec: SearchSpec, template: str, device: str, count: int, threads: int = 1
    ) -> None:
        self.pool = ProcessPoolExecutor(
            max_workers=count,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_process,
            initargs=(spec, template, device, threads),
        )

    def run(self, jobs: list[Job]) -> Iterator[Done]:
        pending: dict[Future, int] = {
            self.pool.submit(_run_in_process, j): i for i, j in enumerate(jobs)
        }
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                index = pending.pop(future)
                responses, seconds = future.result()
                yield Done(index, responses, seconds)

    def close(self) -> None:
        self.pool.shutdown(cancel_futures=True)


class RayActors:
    """Workers as actors of a Ray cluster (``address``, or a local one started here): each
    actor owns a resident model; the driver keeps the optimizer and the journal."""

    def __init__(
        self, spec: SearchSpec, template: str, device: str, count: int, address: str | None
    ) -> None:
        try:
            import ray
        except ImportError:
            raise AlloyError(
                "--ray needs the package 'ray'",
                "install the ray extra: pip install 'alloykit[ray]'",
            ) from None
        self.ray = ray
        self.started = not ray.is_initialized()
        if self.started:
            ray.init(
                address=address,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
                num_cpus=None if address else max(count, 1),
            )
        actor = ray.remote(num_cpus=1)(CandidateWorker)
        gpus = 1 if device.startswith("cuda") else 0
        self.actors = [
            actor.options(num_gpus=gpus).remote(spec, template, device) for _ in range(count)
        ]

    def run(self, jobs: list[Job]) -> Iterator[Done]:
        queue = list(enumerate(jobs))
        running: dict[Any, tuple[int, Any, float]] = {}
        idle = list(self.actors)
        while queue or running:
            while queue and idle:
                index, job = queue.pop(0)
                actor = idle.pop()
                running[actor.run.remote(job)] = (index, actor, time.perf_counter())
            finished, _ = self.ray.wait(list(running), num_returns=1)
            for reference in finished:
                index, actor, start = running.pop(reference)
                idle.append(actor)
                yield Done(index, self.ray.get(reference), time.perf_counter() - start)

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
        if self.started:
            self.ray.shutdown()


def make_backend(
    spec: SearchSpec,
    template: str | Path,
    *,
    device: str = "cpu",
    workers: int = 1,
    ray_address: str | None = None,
    use_ray: bool = False,
) -> Backend:
    if use_ray:
        return RayActors(spec, str(template), device, max(1, workers), ray_address)
    if workers > 1:
        return Processes(spec, str(template), device, workers)
    return InProcess(spec, str(template), device)
