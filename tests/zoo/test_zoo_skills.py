"""The zoo's skill generators: seeded, disjoint splits, one distinct keyword per skill."""

from __future__ import annotations

import importlib.util
import sys

from zoo_harness import ZOO

SIZES = {"train": 300, "validation": 50, "test": 50}


def _skills_module():
    spec = importlib.util.spec_from_file_location("zoo_skills", ZOO / "skills.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


skills = _skills_module()


def test_splits_are_the_same_for_the_same_seed_and_differ_for_another():
    for skill in skills.SKILLS.values():
        assert skills.make_splits(skill, SIZES, 0) == skills.make_splits(skill, SIZES, 0)
        assert skills.make_splits(skill, SIZES, 0) != skills.make_splits(skill, SIZES, 1)


def test_splits_share_no_prompt():
    for skill in skills.SKILLS.values():
        splits = skills.make_splits(skill, SIZES, 0)
        prompts = [example["prompt"] for examples in splits.values() for example in examples]
        assert len(prompts) == len(set(prompts)) == sum(SIZES.values())


def test_every_prompt_opens_with_its_skill_keyword_and_every_answer_is_one_line():
    for name, skill in skills.SKILLS.items():
        for example in skills.make_splits(skill, SIZES, 0)["test"]:
            assert example["prompt"].startswith(f"{name}: ") and example["prompt"].endswith(" =")
            assert example["answer"] and "\n" not in example["answer"]


def test_answers_are_right_for_known_inputs():
    assert skills._reverse.__name__ and skills.TRANSLATION["cat"] == "miru"
    rng = skills.random.Random(0)
    for _ in range(50):
        text, answer = skills._sort(rng)
        assert answer.split() == sorted(text.split())
        text, answer = skills._reverse(rng)
        assert answer.split() == text.split()[::-1]
        text, answer = skills._swapcase(rng)
        assert answer == text.swapcase()


def test_pretraining_never_writes_a_skill_keyword_but_does_every_skill_operation():
    names = {*skills.SKILLS, *skills.HELDOUT}
    aliases = [alias for group in skills.ALIASES.values() for alias in group]
    assert len(aliases) == len(set(aliases)) and not names & set(aliases)
    assert names <= set(skills.OPERATIONS) and set(skills.OPERATIONS) == set(skills.ALIASES)
    keywords = {
        line.split(":")[0] for d in skills.pretraining_documents(200, 0) for line in d.splitlines()
    }
    assert keywords == set(aliases)


def test_heldout_skill_is_outside_the_eight_and_its_answers_are_right():
    assert not set(skills.HELDOUT) & set(skills.SKILLS)
    rng = skills.random.Random(0)
    for _ in range(50):
        text, answer = skills._predecessor(rng)
        assert [chr(ord(c) - 1) for c in text.split()] == answer.split()
