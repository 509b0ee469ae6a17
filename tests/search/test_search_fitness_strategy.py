"""A candidate's responses on generation tasks are the same whichever way exact match is scored,
and the choice does not tie a journal to one of them."""

from __future__ import annotations

import json
from pathlib import Path

from alloykit.evaluate import generate_answers, load_model
from alloykit.search.spec import load_spec
from alloykit.search.workers import CandidateWorker, Job

PROMPTS = [f"{i} + 1 =" for i in range(24)]


def generation_task(directory: Path, model_dir: Path) -> Path:
    """Half the answers are the model's own greedy answers (right), half are not."""
    model, tokenizer = load_model(model_dir)
    answers = generate_answers(model, tokenizer, PROMPTS, max_new_tokens=6)
    rows = [
        {"prompt": prompt, "answer": answer if i % 2 else str(i + 1)}
        for i, (prompt, answer) in enumerate(zip(PROMPTS, answers, strict=True))
    ]
    directory.mkdir(parents=True)
    (directory / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (directory / "task.yaml").write_text("name: plus-gen\ntype: generation\nmax_new_tokens: 6\n")
    return directory


def test_the_fitness_strategy_is_not_part_of_the_fingerprint(spec_of) -> None:
    forced = load_spec(spec_of())
    generated = load_spec(spec_of(fitness={"strategy": "generate"}))
    assert forced.fitness.strategy == "forced"
    assert generated.fitness.strategy == "generate"
    assert forced.fingerprint() == generated.fingerprint()


def test_both_strategies_give_a_model_the_same_responses(spec_of, search_family, tmp_path) -> None:
    task = generation_task(tmp_path / "plus-gen", search_family["ft1"])
    responses = {}
    for strategy in ("forced", "generate"):
        spec = load_spec(spec_of(tasks=[str(task)], fitness={"strategy": strategy}))
        worker = CandidateWorker(spec, str(search_family["base"]))
        job = Job({"plus-gen": list(range(len(PROMPTS)))}, model=str(search_family["ft1"]))
        responses[strategy] = worker.run(job)["plus-gen"]
    assert responses["forced"] == responses["generate"]
    assert responses["forced"][1::2] == [True] * (len(PROMPTS) // 2)
