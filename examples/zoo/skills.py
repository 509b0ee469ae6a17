"""The zoo's skills: seeded generators of (prompt, answer) pairs with one right answer each.

Every prompt reads ``"<skill>: <input> ="`` and its answer is one line; a model's greedy
continuation counts as right when, cut at the first newline, it equals the answer. Symbols
(letters and digits) are written one per token, separated by spaces, so that a small
model sees the structure of each task rather than arbitrary BPE pieces.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from dataclasses import dataclass

LOWER = string.ascii_lowercase
DIGITS = string.digits


@dataclass(frozen=True)
class Skill:
    """One task: its name (also the prompt's keyword) and a generator of (input, answer)."""

    name: str
    make: Callable[[random.Random], tuple[str, str]]
    description: str

    def example(self, rng: random.Random) -> dict[str, str]:
        text, answer = self.make(rng)
        return {"prompt": f"{self.name}: {text} =", "answer": answer}


def _letters(rng: random.Random, low: int, high: int, alphabet: str = LOWER) -> list[str]:
    return [rng.choice(alphabet) for _ in range(rng.randint(low, high))]


def _reverse(rng: random.Random) -> tuple[str, str]:
    letters = _letters(rng, 3, 6)
    return " ".join(letters), " ".join(reversed(letters))


def _sort(rng: random.Random) -> tuple[str, str]:
    digits = [rng.choice(DIGITS) for _ in range(rng.randint(3, 6))]
    return " ".join(digits), " ".join(sorted(digits))


def _swapcase(rng: random.Random) -> tuple[str, str]:
    letters = _letters(rng, 3, 6, LOWER + LOWER.upper())
    return " ".join(letters), " ".join(letter.swapcase() for letter in letters)


TRANSLATION = {
    "cat": "miru",
    "dog": "tasko",
    "red": "vel",
    "blue": "orin",
    "big": "dam",
    "small": "pim",
    "house": "keral",
    "tree": "ulo",
    "water": "sepa",
    "fire": "gonda",
    "sun": "ris",
    "moon": "lunek",
    "runs": "fazu",
    "sleeps": "nomi",
    "eats": "kobe",
    "sees": "vira",
    "old": "brek",
    "new": "silo",
    "bird": "tweta",
    "fish": "plon",
}


def _translate(rng: random.Random) -> tuple[str, str]:
    words = [rng.choice(sorted(TRANSLATION)) for _ in range(rng.randint(1, 3))]
    return " ".join(words), " ".join(TRANSLATION[word] for word in words)


def _successor(rng: random.Random) -> tuple[str, str]:
    letters = _letters(rng, 2, 5, LOWER[:-1])
    return " ".join(letters), " ".join(chr(ord(letter) + 1) for letter in letters)


def _largest(rng: random.Random) -> tuple[str, str]:
    digits = [rng.choice(DIGITS) for _ in range(rng.randint(3, 7))]
    return " ".join(digits), max(digits)


def _double(rng: random.Random) -> tuple[str, str]:
    letters = _letters(rng, 2, 5)
    return " ".join(letters), " ".join(letter for letter in letters for _ in range(2))


def _rotate(rng: random.Random) -> tuple[str, str]:
    letters = _letters(rng, 3, 6)
    return " ".join(letters), " ".join(letters[1:] + letters[:1])


SKILLS: dict[str, Skill] = {
    skill.name: skill
    for skill in (
        Skill("translate", _translate, "1-3 words through a fixed invented 20-word table"),
        Skill("reverse", _reverse, "3-6 letters in reverse order"),
        Skill("swapcase", _swapcase, "3-6 letters with their case swapped"),
        Skill("largest", _largest, "the largest of 3-7 digits"),
        Skill("sort", _sort, "3-6 digits in ascending order"),
        Skill("successor", _successor, "each of 2-5 letters replaced by the next one"),
        Skill("double", _double, "each of 2-5 letters written twice"),
        Skill("rotate", _rotate, "3-6 letters with the first moved to the end"),
    )
}


def make_splits(skill: Skill, sizes: dict[str, int], seed: int) -> dict[str, list[dict[str, str]]]:
    """Disjoint splits of distinct prompts, drawn from a generator seeded by (seed, skill)."""
    rng = random.Random(f"{seed}:{skill.name}")
    wanted = sum(sizes.values())
    seen: dict[str, dict[str, str]] = {}
    attempts = 0
    while len(seen) < wanted:
        attempts += 1
        if attempts > 50 * wanted:
            raise ValueError(f"{skill.name}: cannot draw {wanted} distinct prompts")
        example = skill.example(rng)
        seen.setdefault(example["prompt"], example)
    examples = list(seen.values())
    splits, start = {}, 0
    for split, size in sizes.items():
        splits[split] = examples[start : start + size]
        start += size
    return splits
