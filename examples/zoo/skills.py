"""The zoo's skills: seeded generators of (prompt, answer) pairs with one right answer each.

Every prompt reads ``"<skill>: <input> ="`` and its answer is one line; a model's greedy
continuation counts as right when, cut at the first newline, it equals the answer. Symbols
(letters and digits) are written one per token, separated by spaces, so that a small
model sees the structure of each task rather than arbitrary BPE pieces.

Three groups share one format:

- ``SKILLS``: the eight zoo skills, each a keyword that names one operation;
- ``HELDOUT``: a ninth skill kept out of the zoo, fine-tuned by an ordinary loop to check that
  merging works because of the base, not because of how the eight experts were trained;
- ``OPERATIONS`` and ``ALIASES``: the base's pretraining mix, dozens of symbol operations (the
  nine skills' operations among them) each written under two or three other keywords. The
  skills' own keywords never appear in pretraining, so the base cannot do a skill, but it can
  do its operation: fine-tuning only has to route a new keyword to an ability the base has,
  which is the regime of instruction fine-tunes of a strong pretrained model.
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


def _predecessor(rng: random.Random) -> tuple[str, str]:
    letters = _letters(rng, 2, 5, LOWER[1:])
    return " ".join(letters), " ".join(chr(ord(letter) - 1) for letter in letters)


def _mapped(low: int, high: int, alphabet: str, operation: Callable[[list[str]], list[str]]):
    """A generator of ``alphabet`` sequences of ``low``-``high`` symbols and their image."""

    def make(rng: random.Random) -> tuple[str, str]:
        symbols = _letters(rng, low, high, alphabet)
        return " ".join(symbols), " ".join(operation(symbols))

    return make


def _untranslate(rng: random.Random) -> tuple[str, str]:
    text, answer = _translate(rng)
    return answer, text


MIXED = LOWER + LOWER.upper()


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


HELDOUT: dict[str, Skill] = {
    "predecessor": Skill(
        "predecessor", _predecessor, "each of 2-5 letters replaced by the previous one"
    ),
}

# Pretraining operations: every skill's operation (under other keywords) and many more.
OPERATIONS: dict[str, Callable[[random.Random], tuple[str, str]]] = {
    "translate": _translate,
    "untranslate": _untranslate,
    "reverse": _reverse,
    "swapcase": _swapcase,
    "largest": _largest,
    "sort": _sort,
    "successor": _successor,
    "predecessor": _predecessor,
    "double": _double,
    "rotate": _rotate,
    "copy": _mapped(2, 6, MIXED, lambda s: s),
    "upper": _mapped(2, 6, LOWER, lambda s: [c.upper() for c in s]),
    "sort_down": _mapped(3, 6, DIGITS, lambda s: sorted(s, reverse=True)),
    "smallest": _mapped(3, 7, DIGITS, lambda s: [min(s)]),
    "first": _mapped(2, 6, MIXED, lambda s: s[:1]),
    "last": _mapped(2, 6, MIXED, lambda s: s[-1:]),
    "drop_first": _mapped(3, 6, LOWER, lambda s: s[1:]),
    "repeat": _mapped(2, 4, LOWER, lambda s: s + s),
}

# The keywords each operation is written under in pretraining (never a skill's own name).
ALIASES: dict[str, tuple[str, ...]] = {
    "translate": ("gloss", "lexicon"),
    "untranslate": ("ungloss", "back translate"),
    "reverse": ("backwards", "flip", "mirror"),
    "swapcase": ("invert case", "toggle"),
    "largest": ("max", "biggest"),
    "sort": ("ascending", "arrange"),
    "successor": ("next", "plus one"),
    "predecessor": ("previous", "minus one"),
    "double": ("twice", "stutter"),
    "rotate": ("cycle", "roll left"),
    "copy": ("copy", "echo", "same"),
    "upper": ("upper", "caps"),
    "sort_down": ("descending", "high first"),
    "smallest": ("min", "least"),
    "first": ("first", "head"),
    "last": ("last", "tail"),
    "drop_first": ("rest", "behead"),
    "repeat": ("repeat", "again"),
}


def pretraining_documents(count: int, seed: int) -> list[str]:
    """``count`` documents of 6-12 lines ``"<alias>: <input> = <answer>"``, operations mixed."""
    rng = random.Random(f"{seed}:pretrain")
    keywords = [(alias, name) for name, aliases in ALIASES.items() for alias in aliases]
    docs = []
    for _ in range(count):
        lines = []
        for _ in range(rng.randint(6, 12)):
            alias, name = rng.choice(keywords)
            text, answer = OPERATIONS[name](rng)
            lines.append(f"{alias}: {text} = {answer}")
        docs.append("\n".join(lines) + "\n")
    return docs


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
