"""The zoo's skills: seeded generators of (prompt, answer) pairs with one right answer each.

Every prompt reads ``"<keyword>: <input> ="`` and its answer is one line; a model's greedy
continuation counts as right when, cut at the first newline, it equals the answer. Inputs are
sequences of symbols from one *domain* (lowercase letters, capitals, digits, punctuation,
English words, invented words, Greek letter names, month names, number words), one symbol per
word, separated by spaces.

Three groups share one format:

- ``OPERATIONS``, ``ALIASES`` and ``PRETRAINING``: the base's pretraining mix, 17 sequence
  operations (reverse, rotate, sort, successor, translate, ...), each written under two or three
  keywords and applied to four or five of the domains: 42 (operation, domain) pairs, so that the
  keyword, not the domain, decides the operation;
- ``SKILLS``: the eight zoo skills, each a new keyword for one operation on its own domain;
- ``HELDOUT``: a ninth skill on a ninth domain, kept out of the zoo and fine-tuned by an
  ordinary loop, to check that merging works because of the base, not because of how the eight
  experts were trained.

Why each skill has a domain of its own: on real fine-tunes (one model tuned for code, another
for math, another for a language) the tasks differ in their inputs, and a fine-tune changes what
the model does on *its* inputs. The previous zoo gave seven of eight skills the same letters and
digits, told apart only by a new keyword; each expert then learned "apply my operation to every
letter prompt", and any two merged experts pulled the same prompts two ways
(``examples/zoo/README.md`` has the measurements). The skills' keywords never appear in
pretraining, so the base cannot tell which of its domain's operations a skill wants (it scores
low), but it can do every operation: fine-tuning only has to route a new keyword to an ability
the base has, the regime of instruction fine-tunes of a strong pretrained model.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Domain:
    """An ordered set of symbols that prompts are written in; ``lengths``: symbols per input."""

    name: str
    symbols: tuple[str, ...]
    lengths: tuple[int, int]
    partner: str | None = None  # the domain a "translation" maps to, position for position

    def index(self, symbol: str) -> int:
        return self.symbols.index(symbol)


GREEK = """alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi
rho sigma tau upsilon phi chi psi omega"""
MONTHS = """january february march april may june july august september october november
december"""
NUMBERS = "one two three four five six seven eight nine ten eleven twelve"


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


DOMAINS: dict[str, Domain] = {
    domain.name: domain
    for domain in (
        Domain("lowercase", tuple(string.ascii_lowercase), (3, 6), partner="capitals"),
        Domain("capitals", tuple(string.ascii_uppercase), (3, 6), partner="lowercase"),
        Domain("digits", tuple(string.digits), (3, 7)),
        Domain("punctuation", tuple("!@#$%&*+~?"), (3, 6)),
        Domain("english", tuple(TRANSLATION), (1, 3), partner="invented"),
        Domain("invented", tuple(TRANSLATION.values()), (2, 4), partner="english"),
        Domain("greek", _words(GREEK), (2, 4)),
        Domain("months", _words(MONTHS), (3, 5)),
        Domain("numbers", _words(NUMBERS), (2, 5)),
    )
}


def _by_position(domain: Domain, symbols: list[str]) -> list[str]:
    return sorted(symbols, key=domain.index)


def _shifted(domain: Domain, symbols: list[str], step: int) -> list[str]:
    return [domain.symbols[domain.index(symbol) + step] for symbol in symbols]


def _partner(domain: Domain, symbols: list[str]) -> list[str]:
    assert domain.partner is not None, domain.name
    target = DOMAINS[domain.partner]
    return [target.symbols[domain.index(symbol)] for symbol in symbols]


@dataclass(frozen=True)
class Operation:
    """A sequence operation; ``avoid``: symbols it cannot take (the end of the domain's order)."""

    name: str
    apply: Callable[[Domain, list[str]], list[str]]
    avoid: Callable[[Domain], tuple[str, ...]] = lambda domain: ()

    def example(self, domain: Domain, rng: random.Random) -> tuple[str, str]:
        usable = [s for s in domain.symbols if s not in self.avoid(domain)]
        symbols = [rng.choice(usable) for _ in range(rng.randint(*domain.lengths))]
        return " ".join(symbols), " ".join(self.apply(domain, symbols))


OPERATIONS: dict[str, Operation] = {
    operation.name: operation
    for operation in (
        Operation("copy", lambda d, s: s),
        Operation("reverse", lambda d, s: s[::-1]),
        Operation("rotate", lambda d, s: s[1:] + s[:1]),
        Operation("double", lambda d, s: [symbol for symbol in s for _ in range(2)]),
        Operation("first", lambda d, s: s[:1]),
        Operation("last", lambda d, s: s[-1:]),
        Operation("drop_first", lambda d, s: s[1:]),
        Operation("sort", _by_position),
        Operation("sort_down", lambda d, s: _by_position(d, s)[::-1]),
        Operation("largest", lambda d, s: _by_position(d, s)[-1:]),
        Operation("smallest", lambda d, s: _by_position(d, s)[:1]),
        Operation("successor", lambda d, s: _shifted(d, s, 1), avoid=lambda d: d.symbols[-1:]),
        Operation("predecessor", lambda d, s: _shifted(d, s, -1), avoid=lambda d: d.symbols[:1]),
        Operation("upper", _partner),
        Operation("lower", _partner),
        Operation("translate", _partner),
        Operation("untranslate", _partner),
    )
}

# The keywords each operation is written under in pretraining (never a skill's own keyword).
ALIASES: dict[str, tuple[str, ...]] = {
    "copy": ("copy", "echo", "same"),
    "reverse": ("backwards", "flip", "mirror"),
    "rotate": ("cycle", "roll left"),
    "double": ("twice", "stutter"),
    "first": ("head", "front"),
    "last": ("last", "tail"),
    "drop_first": ("rest", "behead"),
    "sort": ("ascending", "arrange"),
    "sort_down": ("descending", "high first"),
    "largest": ("max", "biggest"),
    "smallest": ("min", "least"),
    "successor": ("next", "plus one"),
    "predecessor": ("previous", "minus one"),
    "upper": ("caps", "shout"),
    "lower": ("whisper", "quiet"),
    "translate": ("gloss", "lexicon"),
    "untranslate": ("ungloss", "back translate"),
}

# The operations pretraining applies to each domain: four or five each, so that a domain alone
# never decides the operation.
PRETRAINING: dict[str, tuple[str, ...]] = {
    "lowercase": ("double", "reverse", "successor", "rotate", "upper"),
    "capitals": ("reverse", "double", "rotate", "predecessor", "lower"),
    "digits": ("largest", "smallest", "sort", "sort_down", "last"),
    "punctuation": ("rotate", "reverse", "double", "copy", "drop_first"),
    "english": ("translate", "reverse", "double", "last"),
    "invented": ("untranslate", "reverse", "double", "first"),
    "greek": ("successor", "predecessor", "reverse", "sort"),
    "months": ("sort", "sort_down", "successor", "reverse", "first"),
    "numbers": ("predecessor", "successor", "largest", "reverse", "sort_down"),
}


@dataclass(frozen=True)
class Skill:
    """One task: its keyword (also its name), its operation and the domain of its inputs."""

    name: str
    operation: str
    domain: str

    @property
    def description(self) -> str:
        return f"{self.operation.replace('_', ' ')} of {DOMAINS[self.domain].name} sequences"

    def make(self, rng: random.Random) -> tuple[str, str]:
        return OPERATIONS[self.operation].example(DOMAINS[self.domain], rng)

    def example(self, rng: random.Random) -> dict[str, str]:
        text, answer = self.make(rng)
        return {"prompt": f"{self.name}: {text} =", "answer": answer}


SKILLS: dict[str, Skill] = {
    skill.name: skill
    for skill in (
        Skill("translate", "translate", "english"),
        Skill("double", "double", "lowercase"),
        Skill("lower", "lower", "capitals"),
        Skill("largest", "largest", "digits"),
        Skill("drop_first", "drop_first", "punctuation"),
        Skill("first", "first", "invented"),
        Skill("successor", "successor", "greek"),
        Skill("sort", "sort", "months"),
    )
}

HELDOUT: dict[str, Skill] = {"predecessor": Skill("predecessor", "predecessor", "numbers")}


def pretraining_pairs() -> list[tuple[str, str]]:
    """Every (operation, domain) pair of the pretraining mix."""
    return [(operation, domain) for domain, ops in PRETRAINING.items() for operation in ops]


def pretraining_documents(count: int, seed: int) -> list[str]:
    """``count`` documents of 6-12 lines ``"<keyword>: <input> = <answer>"``.

    Each line is one of the (operation, domain) pairs under one of the operation's aliases, or,
    as often as any one pair, a skill's keyword used loosely: on its skill's domain, with an
    operation drawn at random from the ones pretraining applies there (the skill's own among
    them). So every keyword a fine-tune will see is a trained word of the base, one that names
    its kind of input but not which operation, as the words of a real instruction are known to
    a pretrained model before it is tuned to follow them.
    """
    rng = random.Random(f"{seed}:pretrain")
    entries: list[tuple[str, str, tuple[str, ...]]] = [
        (domain, operation, ALIASES[operation]) for operation, domain in pretraining_pairs()
    ]
    for skill in (*SKILLS.values(), *HELDOUT.values()):
        entries.append((skill.domain, "", (skill.name,)))
    docs = []
    for _ in range(count):
        lines = []
        for _ in range(rng.randint(6, 12)):
            domain, operation, keywords = rng.choice(entries)
            operation = operation or rng.choice(PRETRAINING[domain])
            keyword = rng.choice(keywords)
            text, answer = OPERATIONS[operation].example(DOMAINS[domain], rng)
            lines.append(f"{keyword}: {text} = {answer}")
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
