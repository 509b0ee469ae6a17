"""General text for pretraining the base: nothing downloaded, nothing that teaches a skill.

The text is the documentation already on this machine: docstrings of the Python standard
library and the licence texts under /usr/share/common-licenses. Lines in the zoo's prompt
format with random content teach the base the format (an answer after ``=`` ends at the
newline) without any skill: their answers are unrelated to their inputs.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import random
import string
import sys
import warnings
from pathlib import Path

LICENSES = Path("/usr/share/common-licenses")
SKIPPED_MODULES = {"antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo"}
FORMAT_KEYWORDS = ("note", "item", "entry", "record", "field", "label", "code", "line", "step")


def _module_docstrings(name: str) -> list[str]:
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            module = importlib.import_module(name)
    except Exception:
        return []
    docs = [inspect.getdoc(module) or ""]
    for attribute, value in sorted(vars(module).items()):
        if attribute.startswith("_") or getattr(value, "__module__", None) != name:
            continue
        if inspect.isclass(value) or inspect.isroutine(value):
            docs.append(inspect.getdoc(value) or "")
        if inspect.isclass(value):
            for member_name, member in sorted(vars(value).items()):
                doc = getattr(member, "__doc__", None)
                if not member_name.startswith("_") and callable(member) and isinstance(doc, str):
                    docs.append(inspect.cleandoc(doc))
    return [doc for doc in docs if len(doc) > 40]


def documents(max_modules: int | None = None) -> list[str]:
    """Docstrings of the standard library and licence texts, in a fixed order."""
    names = [
        name
        for name in sorted(sys.stdlib_module_names)
        if not name.startswith("_") and name not in SKIPPED_MODULES
    ]
    docs: list[str] = []
    for name in names[:max_modules]:
        docs.extend(_module_docstrings(name))
    if LICENSES.is_dir():
        for path in sorted(LICENSES.iterdir()):
            if path.is_file():
                docs.append(path.read_text(encoding="utf-8", errors="replace"))
    return docs


def _random_symbols(rng: random.Random) -> str:
    alphabet = rng.choice(
        (string.ascii_lowercase, string.ascii_letters, string.digits, string.ascii_lowercase[:6])
    )
    return " ".join(rng.choice(alphabet) for _ in range(rng.randint(1, 7)))


def format_documents(count: int, seed: int) -> list[str]:
    """``count`` documents of lines ``"<keyword>: <random> = <random>"``."""
    rng = random.Random(f"{seed}:format")
    docs = []
    for _ in range(count):
        lines = [
            f"{rng.choice(FORMAT_KEYWORDS)}: {_random_symbols(rng)} = {_random_symbols(rng)}"
            for _ in range(rng.randint(4, 12))
        ]
        docs.append("\n".join(lines) + "\n")
    return docs
