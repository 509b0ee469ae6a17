"""A worker scores a job's generation tasks together and hands each task back its own
responses, in the order the job asked for them: what scoring each task alone gives."""

from __future__ import annotations

import json
from pathlib import Path

from alloykit.evaluate import generate_answers, item_hits, load_model
from alloykit.search.fitness import Fitness
from alloykit.search.space import Space
from alloykit.search.spec import load_spec
from alloykit.search.workers import CandidateWorker, Job

PROMPTS = [f"{i} + 1 =" for i in range(12)]


def generation_task(root: Path, name: str, model_dir: Path, budget: int, right: int) -> str:
    """The model's own greedy answers (with ``budget`` tokens) where ``i % 3 == right``, and a
    wrong answer (its own with one character more) elsewhere."""
    model, tokenizer = load_model(model_dir)
    answers = generate_answers(model, tokenizer, PROMPTS, max_new_tokens=budget)
    rows = [
        {"prompt": prompt, "answer": answer if i % 3 == right else answer + "!"}
        for i, (prompt, answer) in enumerate(zip(PROMPTS, answers, strict=True))
    ]
    directory = root / name
    directory.mkdir(parents=True)
    (directory / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (directory / "task.yaml").write_text(
        f"name: {name}\ntype: generation\nmax_new_tokens: {budget}\n"
    )
    return str(directory)


REQUESTS = {
    "three": [7, 1, 4, 0, 10, 11, 2],
    "plus": [5, 2, 9, 0],
    "seven": [5, 0, 3, 9, 8, 6, 1, 2],
    "two": [11, 10, 1, 4],
}
RIGHT = {"three": 1, "seven": 0, "two": 2}
"""Which ``i % 3`` each generation task answers right."""


def scored_spec(spec_of, search_family, tmp_path: Path):
    tasks = [
        generation_task(tmp_path, name, search_family["ft1"], budget, RIGHT[name])
        for name, budget in (("three", 3), ("seven", 7), ("two", 2))
    ]
    return load_spec(spec_of(tasks=[*tasks, str(search_family["plus"])]))


def test_each_task_gets_its_own_responses_in_the_requested_order(
    spec_of, search_family, tmp_path
) -> None:
    worker = CandidateWorker(
        scored_spec(spec_of, search_family, tmp_path), str(search_family["base"])
    )
    responses = worker.run(Job(REQUESTS, model=str(search_family["ft1"])))
    assert list(responses) == list(REQUESTS)
    for name, right in RIGHT.items():
        assert responses[name] == [i % 3 == right for i in REQUESTS[name]], name
    assert len(responses["plus"]) == len(REQUESTS["plus"])


def test_a_candidate_gets_what_scoring_each_task_alone_gives(
    spec_of, search_family, tmp_path
) -> None:
    spec = scored_spec(spec_of, search_family, tmp_path)
    worker = CandidateWorker(spec, str(search_family["base"]))
    space = Space(spec)
    responses = worker.run(Job(REQUESTS, recipe=space.recipe(space.point([0.35, 0.2]))))
    tasks = Fitness(spec).tasks
    alone = {
        name: item_hits(
            worker.model,
            worker.tokenizer,
            tasks[name].task,
            [tasks[name].examples[i] for i in indices],
            batch_size=spec.fitness.batch_size,
        )
        for name, indices in REQUESTS.items()
    }
    assert responses == alone


def test_a_cpu_merge_takes_the_fitness_threads_once_its_inputs_are_large(monkeypatch) -> None:
    """Threads only pay for their hand-offs on large inputs, and a GPU merge is one queue."""
    import torch

    from alloykit.search.workers import PARALLEL_MERGE_BYTES, merge_threads

    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    assert merge_threads("cpu", PARALLEL_MERGE_BYTES - 1) == 1
    assert merge_threads("cpu", PARALLEL_MERGE_BYTES) == 3
    assert merge_threads("cuda:0", 10 * PARALLEL_MERGE_BYTES) == 1
