"""Examples with token budgets of their own share batches and get, each, the verdict that
greedy generation with its own budget gives: several tasks are scored in one call."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from scripted_lm import ScriptedLM

from alloykit.errors import AlloyError
from alloykit.evaluate import (
    answer_hits,
    forced_verdicts,
    generate_answers,
    item_hits,
    item_hits_per_task,
    load_model,
    load_task,
)
from alloykit.evaluate.tasks import Task

PROMPTS = ["q", "what is 2+2?", "reverse: abc =", "hello", "x = (1, 2, 3); y =", "a b "]


def one_budget_at_a_time(model, tokenizer, examples: list[dict], budgets: list[int]) -> list:
    """Generation's hits, each example scored alone with its own budget."""
    return [
        answer_hits(model, tokenizer, [example], max_new_tokens=budget, strategy="generate")[0]
        for example, budget in zip(examples, budgets, strict=True)
    ]


def test_an_answer_that_only_fits_the_larger_budget_is_right_only_there(tiny_lm) -> None:
    char_tokenizer = tiny_lm[1]
    ids = char_tokenizer(" uvwxy\n", add_special_tokens=False)["input_ids"]
    model = ScriptedLM(char_tokenizer, {"p1:": ids, "p2:": ids}, filler=ids[1])
    examples = [
        {"prompt": "p1:", "answer": "uvwxy"},
        {"prompt": "p2:", "answer": "uvwxy"},
        {"prompt": "p1:", "answer": "uvw"},
        {"prompt": "p2:", "answer": "uvw"},
    ]
    budgets = [4, 8, 4, 8]
    expected = [False, True, True, False]
    assert one_budget_at_a_time(model, char_tokenizer, examples, budgets) == expected
    assert forced_verdicts(model, char_tokenizer, examples, max_new_tokens=budgets) == expected
    for strategy in ("forced", "generate"):
        hits = answer_hits(
            model, char_tokenizer, examples, max_new_tokens=budgets, strategy=strategy
        )
        assert hits == expected


def test_generation_stops_each_row_at_its_own_budget(tiny_lm) -> None:
    model, tokenizer = tiny_lm
    budgets = [2, 12, 5, 1, 12, 3]
    alone = [
        generate_answers(model, tokenizer, [prompt], max_new_tokens=budget)[0]
        for prompt, budget in zip(PROMPTS, budgets, strict=True)
    ]
    for batch_size in (1, 64):
        together = generate_answers(
            model, tokenizer, PROMPTS, max_new_tokens=budgets, batch_size=batch_size
        )
        assert together == alone
    assert len(set(alone)) > 1


@pytest.mark.parametrize("batch_size", [1, 5, 64])
def test_mixed_budgets_in_one_batch_get_generations_verdicts(tiny_lm, batch_size: int) -> None:
    model, tokenizer = tiny_lm
    long_answers = generate_answers(model, tokenizer, PROMPTS, max_new_tokens=10)
    short_answers = generate_answers(model, tokenizer, PROMPTS, max_new_tokens=3)
    examples, budgets = [], []
    for prompt, long, short in zip(PROMPTS, long_answers, short_answers, strict=True):
        for answer in (long, short, long[:-1], long + "e"):
            for budget in (3, 10):
                examples.append({"prompt": prompt, "answer": answer})
                budgets.append(budget)
    expected = one_budget_at_a_time(model, tokenizer, examples, budgets)
    assert any(expected[k + 1] and not expected[k] for k in range(0, len(examples), 2)), (
        "some answer is right with the larger budget only"
    )
    assert any(expected[k] and not expected[k + 1] for k in range(0, len(examples), 2)), (
        "some answer is right with the smaller budget only (cut there)"
    )
    for strategy in ("forced", "generate"):
        hits = answer_hits(
            model,
            tokenizer,
            examples,
            max_new_tokens=budgets,
            batch_size=batch_size,
            strategy=strategy,
        )
        assert hits == expected
    verdicts = forced_verdicts(
        model, tokenizer, examples, max_new_tokens=budgets, batch_size=batch_size
    )
    assert all(v is None or v == e for v, e in zip(verdicts, expected, strict=True))


@pytest.mark.parametrize(
    ("budgets", "message"),
    [([4, 0], "must be at least 1, got 0"), ([4], "1 token budgets for 2 examples")],
)
def test_bad_per_example_budgets_are_refused(tiny_lm, budgets: list[int], message: str) -> None:
    model, tokenizer = tiny_lm
    examples = [{"prompt": "q", "answer": "a"}, {"prompt": "hello", "answer": "b"}]
    for score in (forced_verdicts, answer_hits):
        with pytest.raises(AlloyError, match=message):
            score(model, tokenizer, examples, max_new_tokens=budgets)
    with pytest.raises(AlloyError, match=message):
        generate_answers(model, tokenizer, ["q", "hello"], max_new_tokens=budgets)


def generation_task(name: str, max_new_tokens: int) -> Task:
    return Task(name, "generation", {}, "exact_match", max_new_tokens=max_new_tokens)


def test_tasks_scored_together_get_what_each_gets_alone(tiny_lm, task_dirs) -> None:
    model, tokenizer = tiny_lm
    answers = {
        budget: generate_answers(model, tokenizer, PROMPTS, max_new_tokens=budget)
        for budget in (2, 9)
    }
    choices = load_task(task_dirs["multiple_choice"])
    right, cut = (
        [{"prompt": p, "answer": a} for p, a in zip(PROMPTS, answers[budget], strict=True)]
        for budget in (9, 2)
    )
    tasks = [
        (generation_task("short", 2), right),
        (choices, choices.examples("test")[:5]),
        (generation_task("long", 9), right),
        (generation_task("empty", 4), []),
        (generation_task("cut", 9), cut),
    ]
    for strategy in ("forced", "generate"):
        together = item_hits_per_task(model, tokenizer, tasks, batch_size=4, strategy=strategy)
        alone = [
            item_hits(model, tokenizer, task, examples, batch_size=4, strategy=strategy)
            for task, examples in tasks
        ]
        assert together == alone
    assert together[2] == [True] * len(PROMPTS)
    assert together[0] != together[2], "the same examples with another budget score otherwise"


def test_a_perplexity_task_is_refused_among_others(tiny_lm, task_dirs) -> None:
    model, tokenizer = tiny_lm
    tasks = [(generation_task("g", 4), [{"prompt": "q", "answer": "a"}])]
    tasks.append((load_task(task_dirs["perplexity"]), []))
    with pytest.raises(AlloyError, match="no per-example right or wrong answers"):
        item_hits_per_task(model, tokenizer, tasks)


ZOO = Path(__file__).resolve().parents[2] / "examples" / "zoo"


@pytest.mark.skipif(not (ZOO / "base" / "model.safetensors").is_file(), reason="zoo not built")
@pytest.mark.parametrize("name", ["base", "experts/double"])
def test_zoo_tasks_scored_together_get_what_each_gets_alone(name: str) -> None:
    """Eight tasks with budgets from 4 to 15 tokens, 20 examples each (a search candidate's
    share), in one call and task by task."""
    torch.manual_seed(0)
    model, tokenizer = load_model(ZOO / name)
    tasks = []
    for directory in sorted((ZOO / "tasks").iterdir()):
        task = load_task(directory)
        tasks.append((task, task.examples("validation")[::10][:20]))
    assert len({task.max_new_tokens for task, _ in tasks}) > 4
    together = item_hits_per_task(model, tokenizer, tasks, batch_size=128)
    alone = [item_hits(model, tokenizer, t, examples, batch_size=128) for t, examples in tasks]
    assert together == alone
    assert 0 < sum(map(sum, together)) < sum(map(len, together))
