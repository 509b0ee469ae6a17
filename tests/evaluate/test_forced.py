"""Teacher-forced exact match gives, example by example, the verdicts of greedy generation."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from scripted_lm import ScriptedLM

from alloykit.errors import AlloyError
from alloykit.evaluate import answer_hits, forced_verdicts, generate_answers, load_model, load_task
from alloykit.evaluate.forced import ROUNDS


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def both_strategies(model, tokenizer, examples, max_new_tokens: int, batch_size: int = 64):
    """``(forced verdicts, hits)`` after checking that both strategies give the same hits."""
    generated = answer_hits(
        model,
        tokenizer,
        examples,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        strategy="generate",
    )
    forced = answer_hits(
        model, tokenizer, examples, max_new_tokens=max_new_tokens, batch_size=batch_size
    )
    assert forced == generated
    verdicts = forced_verdicts(
        model, tokenizer, examples, max_new_tokens=max_new_tokens, batch_size=batch_size
    )
    return verdicts, forced


@pytest.fixture
def char_tokenizer(tiny_lm):
    """The character tokenizer, with two longer tokens: ``ab`` and one holding a newline."""
    tokenizer = copy.deepcopy(tiny_lm[1])
    tokenizer.add_tokens(["ab", "c\nz"])
    return tokenizer


def scripted(tokenizer, replies: dict[str, str | list[int]], **options) -> ScriptedLM:
    as_ids = {
        prompt: ids(tokenizer, reply) if isinstance(reply, str) else reply
        for prompt, reply in replies.items()
    }
    return ScriptedLM(tokenizer, as_ids, filler=ids(tokenizer, "z")[0], **options)


def test_right_and_wrong_answers_are_decided_in_one_pass(char_tokenizer) -> None:
    model = scripted(char_tokenizer, {"p1:": " abc\n", "p2:": " abd\n", "p3:": " abcd\n"})
    examples = [
        {"prompt": "p1:", "answer": "abc"},
        {"prompt": "p2:", "answer": "abc"},
        {"prompt": "p3:", "answer": "abc"},
        {"prompt": "p1:", "answer": "  abc "},
    ]
    verdicts, hits = both_strategies(model, char_tokenizer, examples, max_new_tokens=8)
    assert verdicts == [True, False, False, True]
    assert hits == [True, False, False, True]


def test_an_answer_ended_by_eos_is_right(char_tokenizer) -> None:
    eos = char_tokenizer.eos_token_id
    model = scripted(char_tokenizer, {"p1:": [*ids(char_tokenizer, " abc"), eos]})
    examples = [{"prompt": "p1:", "answer": "abc"}, {"prompt": "p1:", "answer": "ab"}]
    verdicts, hits = both_strategies(model, char_tokenizer, examples, max_new_tokens=8)
    assert verdicts == hits == [True, False]


def test_an_empty_answer_matches_an_immediate_stop(char_tokenizer) -> None:
    eos = char_tokenizer.eos_token_id
    model = scripted(char_tokenizer, {"p1:": "\n", "p2:": [eos], "p3:": " a\n"})
    examples = [{"prompt": p, "answer": ""} for p in ("p1:", "p2:", "p3:")]
    verdicts, hits = both_strategies(model, char_tokenizer, examples, max_new_tokens=8)
    assert verdicts == hits == [True, True, False]


def test_trailing_and_leading_spaces_are_stripped(char_tokenizer) -> None:
    model = scripted(
        char_tokenizer,
        {"p1:": " abc  \n", "p2:": "   abc\n", "p3:": " abc" + " " * (ROUNDS + 1) + "\n"},
    )
    examples = [{"prompt": p, "answer": "abc"} for p in ("p1:", "p2:", "p3:")]
    verdicts, hits = both_strategies(model, char_tokenizer, examples, max_new_tokens=12)
    assert hits == [True, True, True]
    assert verdicts == [True, True, None], "more spaces than forced passes: left to generation"


def test_another_tokenization_of_the_answer_is_right(char_tokenizer) -> None:
    tokens = char_tokenizer.convert_tokens_to_ids
    assert ids(char_tokenizer, " abc") == tokens([" ", "ab", "c"])
    model = scripted(
        char_tokenizer,
        {"p1:": tokens([" ", "a", "b", "c", "\n"]), "p2:": tokens([" ", "a", "b", "d", "\n"])},
    )
    examples = [{"prompt": "p1:", "answer": "abc"}, {"prompt": "p2:", "answer": "abc"}]
    verdicts, hits = both_strategies(model, char_tokenizer, examples, max_new_tokens=8)
    assert verdicts == hits == [True, False]


def test_missing_whitespace_inside_the_answer_is_wrong(char_tokenizer) -> None:
    model = scripted(char_tokenizer, {"p1:": " ab\n"})
    examples = [{"prompt": "p1:", "answer": "a b"}]
    verdicts, hits = both_strategies(model, char_tokenizer, examples, max_new_tokens=8)
    assert verdicts == hits == [False]


def test_text_before_a_newline_inside_a_token_is_the_answer(char_tokenizer) -> None:
    tokens = char_tokenizer.convert_tokens_to_ids
    model = scripted(char_tokenizer, {"p1:": tokens([" ", "a", "b", "c\nz"])})
    examples = [{"prompt": "p1:", "answer": "abc"}, {"prompt": "p1:", "answer": "abcz"}]
    verdicts, hits = both_strategies(model, char_tokenizer, examples, max_new_tokens=8)
    assert verdicts == hits == [True, False]


def test_answers_longer_than_the_token_budget_are_cut(char_tokenizer) -> None:
    model = scripted(char_tokenizer, {"p1:": " uvwxy\n"})
    examples = [{"prompt": "p1:", "answer": "uvw"}, {"prompt": "p1:", "answer": "uvwxy"}]
    verdicts, hits = both_strategies(model, char_tokenizer, examples, max_new_tokens=4)
    assert verdicts == hits == [True, False]
    verdicts, hits = both_strategies(model, char_tokenizer, examples, max_new_tokens=1)
    assert verdicts == hits == [False, False]


def test_special_tokens_that_decoding_skips_do_not_break_an_answer(char_tokenizer) -> None:
    pad = char_tokenizer.pad_token_id
    a, b, space, newline = (ids(char_tokenizer, c)[0] for c in ("a", "b", " ", "\n"))
    model = scripted(char_tokenizer, {"p1:": [space, a, pad, b, newline]})
    examples = [{"prompt": "p1:", "answer": "ab"}]
    verdicts, hits = both_strategies(model, char_tokenizer, examples, max_new_tokens=8)
    assert verdicts == hits == [True]


def test_an_id_the_tokenizer_lacks_decodes_to_nothing_as_in_generation(char_tokenizer) -> None:
    unknown = len(char_tokenizer) + 1
    a, b, space, newline = (ids(char_tokenizer, c)[0] for c in ("a", "b", " ", "\n"))
    model = scripted(char_tokenizer, {"p1:": [space, a, unknown, b, newline]})
    examples = [{"prompt": "p1:", "answer": "ab"}]
    verdicts, hits = both_strategies(model, char_tokenizer, examples, max_new_tokens=8)
    assert verdicts == hits == [True]


def test_a_prompt_ending_in_whitespace_takes_the_answer_without_a_space(char_tokenizer) -> None:
    model = scripted(char_tokenizer, {"p1: ": "abc\n"})
    examples = [{"prompt": "p1: ", "answer": "abc"}]
    verdicts, hits = both_strategies(model, char_tokenizer, examples, max_new_tokens=8)
    assert verdicts == hits == [True]


def test_a_near_tie_is_left_to_generation(char_tokenizer) -> None:
    v, w = ids(char_tokenizer, "v")[0], ids(char_tokenizer, "w")[0]
    assert v < w, "argmax takes the lower id of a tie: generation answers 'uv'"
    model = scripted(char_tokenizer, {"p1:": " uv\n"}, ties={("p1:", 2): w})
    examples = [{"prompt": "p1:", "answer": "uv"}]
    verdicts, hits = both_strategies(model, char_tokenizer, examples, max_new_tokens=8)
    assert verdicts == [None]
    assert hits == [True]


@pytest.mark.parametrize("padding_side", ["left", "right"])
@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_padding_side_and_batch_size_do_not_change_verdicts(
    char_tokenizer, padding_side: str, batch_size: int
) -> None:
    replies = {f"p{i}:" + "x" * (3 * i): " " + "abc"[: 1 + i % 3] + "\n" for i in range(7)}
    model = scripted(char_tokenizer, replies)
    examples = [{"prompt": p, "answer": "abc"[: 1 + i % 3]} for i, p in enumerate(replies)]
    examples += [{"prompt": p, "answer": "abc"} for p in replies]
    tokenizer = copy.deepcopy(char_tokenizer)
    tokenizer.padding_side = padding_side
    verdicts, hits = both_strategies(model, tokenizer, examples, max_new_tokens=6, batch_size=7)
    assert verdicts == hits
    assert hits == [True] * 7 + [i % 3 == 2 for i in range(7)]


@pytest.mark.parametrize("selectable_cache", [True, False])
def test_a_cache_that_cannot_drop_rows_gives_the_same_verdicts(
    char_tokenizer, selectable_cache: bool
) -> None:
    replies = {"p1:": " abc\n", "p2:": " xbc\n", "p3:": " ab\n", "p4:": " a c\n"}
    model = scripted(char_tokenizer, replies, selectable_cache=selectable_cache)
    examples = [{"prompt": p, "answer": "abc"} for p in replies]
    verdicts, hits = both_strategies(model, char_tokenizer, examples, max_new_tokens=8)
    assert verdicts == hits == [True, False, False, False]


FAMILIES = ["llama", "qwen2", "gemma", "mistral", "phi3", "gpt2"]
PROMPTS = ["q", "what is 2+2?", "reverse: abc =", "hello", "x = (1, 2, 3); y =", "a b "]


@pytest.mark.parametrize("family", FAMILIES)
def test_random_tiny_models_get_the_verdicts_of_generation(tiny_lm, family: str) -> None:
    from transformers import AutoModelForCausalLM

    from alloykit.tiny_models import build_config

    tokenizer = tiny_lm[1]
    torch.manual_seed(7)
    specials = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    config = build_config(family, vocab_size=len(tokenizer), **specials)
    model = AutoModelForCausalLM.from_config(config).eval()
    for budget in (3, 10):
        answers = generate_answers(model, tokenizer, PROMPTS, max_new_tokens=budget)
        examples = []
        for prompt, answer in zip(PROMPTS, answers, strict=True):
            examples += [
                {"prompt": prompt, "answer": answer},
                {"prompt": prompt, "answer": answer[:-1]},
                {"prompt": prompt, "answer": answer + "e"},
                {"prompt": prompt, "answer": answer.replace(" ", "")},
            ]
        for batch_size in (1, 64):
            verdicts, hits = both_strategies(model, tokenizer, examples, budget, batch_size)
            assert hits[::4] == [True] * len(PROMPTS), "a model's own answers are right"
            assert sum(v is None for v in verdicts) <= len(examples) // 2


ZOO = Path(__file__).resolve().parents[2] / "examples" / "zoo"
ZOO_MODELS = ["base", *sorted(f"experts/{p.name}" for p in (ZOO / "experts").glob("*"))]
ZOO_EXAMPLES = 25


@pytest.mark.skipif(not (ZOO / "base" / "model.safetensors").is_file(), reason="zoo not built")
@pytest.mark.parametrize("name", ZOO_MODELS)
def test_zoo_models_get_the_verdicts_of_generation_mostly_in_one_pass(name: str) -> None:
    """Every zoo model on the first examples of every task's validation split (the whole
    splits are compared by ``benchmarks/exact_match.py``)."""
    model, tokenizer = load_model(ZOO / name)
    decided = total = 0
    for task in sorted((ZOO / "tasks").iterdir()):
        task = load_task(task)
        examples = task.examples("validation")[:ZOO_EXAMPLES]
        verdicts, _ = both_strategies(model, tokenizer, examples, task.max_new_tokens)
        decided += sum(verdict is not None for verdict in verdicts)
        total += len(examples)
    assert decided >= 0.9 * total


def test_an_unknown_strategy_is_refused(tiny_lm) -> None:
    model, tokenizer = tiny_lm
    with pytest.raises(AlloyError, match="unknown exact-match strategy 'beam'"):
        answer_hits(
            model, tokenizer, [{"prompt": "q", "answer": "a"}], max_new_tokens=2, strategy="beam"
        )


@pytest.mark.parametrize("bad", [{"max_new_tokens": 0}, {"batch_size": 0}])
def test_bad_budgets_are_refused(tiny_lm, bad: dict) -> None:
    model, tokenizer = tiny_lm
    options = {"max_new_tokens": 4, "batch_size": 8, **bad}
    with pytest.raises(AlloyError, match="must be at least 1"):
        forced_verdicts(model, tokenizer, [{"prompt": "q", "answer": "a"}], **options)
