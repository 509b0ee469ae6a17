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
    rng = skills.random.Random(0)
    domains = skills.DOMAINS
    for _ in range(50):
        text, answer = skills.SKILLS["sort"].make(rng)
        order = domains["months"].symbols
        assert answer.split() == sorted(text.split(), key=order.index)
        text, answer = skills.SKILLS["lower"].make(rng)
        assert answer == text.lower() and text.isupper()
        text, answer = skills.SKILLS["drop_first"].make(rng)
        assert answer.split() == text.split()[1:]
        text, answer = skills.SKILLS["successor"].make(rng)
        greek = domains["greek"].symbols
        assert [greek[greek.index(s) + 1] for s in text.split()] == answer.split()
        text, answer = skills.SKILLS["translate"].make(rng)
        assert answer.split() == [skills.TRANSLATION[word] for word in text.split()]
        text, answer = skills.SKILLS["largest"].make(rng)
        assert answer == max(text.split())
    assert skills.OPERATIONS["upper"].apply(domains["lowercase"], ["a", "z"]) == ["A", "Z"]
    assert skills.OPERATIONS["untranslate"].apply(domains["invented"], ["miru"]) == ["cat"]


def test_each_skill_has_a_domain_of_its_own_that_pretraining_covers_with_other_operations():
    every = [*skills.SKILLS.values(), *skills.HELDOUT.values()]
    assert len({skill.domain for skill in every}) == len(every)
    pairs = skills.pretraining_pairs()
    for skill in every:
        assert (skill.operation, skill.domain) in pairs
        assert len(skills.PRETRAINING[skill.domain]) >= 4  # the domain alone never decides


def test_pretraining_uses_skill_keywords_only_loosely_on_their_own_domain():
    """Aliases name one operation each; a skill's keyword appears only on its skill's domain,
    with every operation pretraining applies there (so the base cannot know which one)."""
    every = {**skills.SKILLS, **skills.HELDOUT}
    aliases = [alias for group in skills.ALIASES.values() for alias in group]
    assert len(aliases) == len(set(aliases)) and not set(every) & set(aliases)
    assert set(skills.OPERATIONS) == set(skills.ALIASES)
    seen: dict[str, set[str]] = {}
    for document in skills.pretraining_documents(3000, 0):
        for line in document.splitlines():
            keyword, rest = line.split(": ", 1)
            seen.setdefault(keyword, set()).add(rest)
    assert set(seen) == set(aliases) | set(every)
    for name, skill in every.items():
        domain = skills.DOMAINS[skill.domain]
        done = set()
        for rest in seen[name]:
            text, answer = (part.split() for part in rest.split(" = "))
            assert set(text) <= set(domain.symbols), (name, rest)
            done |= {
                operation
                for operation in skills.PRETRAINING[skill.domain]
                if not set(text) & set(skills.OPERATIONS[operation].avoid(domain))
                and skills.OPERATIONS[operation].apply(domain, text) == answer
            }
        assert done == set(skills.PRETRAINING[skill.domain]), name


def test_heldout_skill_is_outside_the_eight_and_its_answers_are_right():
    assert not set(skills.HELDOUT) & set(skills.SKILLS)
    numbers = skills.DOMAINS["numbers"].symbols
    rng = skills.random.Random(0)
    for _ in range(50):
        text, answer = skills.HELDOUT["predecessor"].make(rng)
        assert [numbers[numbers.index(w) - 1] for w in text.split()] == answer.split()
