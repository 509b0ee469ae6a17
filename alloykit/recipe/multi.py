"""Multi-document recipes (mergekit-multi): several merges in one YAML, later ones using earlier
ones by ``name:``.

As in mergekit-multi, each YAML document is a recipe plus an optional ``name:``; a model
reference equal to another document's name stands for that merge's output, which is written to
``INTERMEDIATE/<name>``. At most one document has no name: it is the final merge, written to
OUT. Merges run in dependency order (document order where free).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from alloykit.errors import RecipeError
from alloykit.recipe.document import UniqueKeyLoader

_REFERENCE_KEYS = ("model", "base_model", "tokenizer_source", "source", "path")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class MergeStep:
    """One document of a multi-document recipe, its references to other steps resolved."""

    name: str | None  # None: the final merge, written to OUT
    recipe: dict[str, Any]
    needs: tuple[str, ...]  # names of the steps whose outputs it reads
    index: int  # position in the file, for messages

    @property
    def label(self) -> str:
        return f"document {self.index + 1}" + (f" ({self.name})" if self.name else " (final)")


def is_multi_document(path: Path) -> bool:
    """Whether the recipe file holds several documents, or one with mergekit-multi's ``name:``
    (a file that does not parse is left to the single-document reader, which locates errors)."""
    try:
        documents = _documents(path)
    except RecipeError:
        return False
    return len(documents) > 1 or (len(documents) == 1 and "name" in documents[0])


def load_steps(path: Path, intermediate_dir: Path) -> list[MergeStep]:
    """The file's merges in the order to run them, each name reference replaced by the path
    ``intermediate_dir/<name>`` of that merge's output."""
    raw = _documents(path)
    named: dict[str | None, int] = {}
    for index, document in enumerate(raw):
        name = document.get("name")
        if name is not None and (not isinstance(name, str) or not _NAME.match(name)):
            raise RecipeError(
                f"{path}: document {index + 1}: name: expected a directory-safe name, got {name!r}",
                "use letters, digits, '.', '_' and '-'",
            )
        if name in named:
            raise RecipeError(
                f"{path}: document {index + 1}: "
                + (f"name {name!r} is used twice" if name else "a second unnamed document"),
                "give every merge a distinct name: (only the final merge may have none)",
            )
        named[name] = index
    names = {name for name in named if name is not None}
    steps = []
    for index, document in enumerate(raw):
        body = {key: value for key, value in document.items() if key != "name"}
        used: set[str] = set()
        body = _patched(body, names, intermediate_dir, used)
        steps.append(MergeStep(document.get("name"), body, tuple(sorted(used)), index))
    return _in_dependency_order(steps, path)


def _documents(path: Path) -> list[dict[str, Any]]:
    text = _read(path)
    try:
        documents = [d for d in yaml.load_all(text, Loader=UniqueKeyLoader) if d is not None]
    except yaml.YAMLError as error:
        raise RecipeError(f"{path}: invalid YAML: {error}".splitlines()[0]) from None
    for index, document in enumerate(documents):
        if not isinstance(document, dict):
            raise RecipeError(
                f"{path}: document {index + 1} is not a mapping of keys",
                "each document between --- lines is one recipe",
            )
    return documents


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as error:
        raise RecipeError(f"cannot read recipe file {path}: {error.strerror}") from None


def _patched(value: Any, names: set[str], directory: Path, used: set[str], key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _patched(v, names, directory, used, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_patched(item, names, directory, used, key) for item in value]
    if isinstance(value, str) and key in _REFERENCE_KEYS:
        model, plus, adapter = value.partition("+")
        if model in names:
            used.add(model)
            return str(directory / model) + plus + adapter
    return value


def _in_dependency_order(steps: list[MergeStep], path: Path) -> list[MergeStep]:
    by_name = {step.name: step for step in steps if step.name is not None}
    ordered: list[MergeStep] = []
    state: dict[int, str] = {}

    def visit(step: MergeStep, chain: list[str]) -> None:
        if state.get(step.index) == "done":
            return
        if state.get(step.index) == "visiting":
            cycle = " → ".join([*chain, step.name or "final"])
            raise RecipeError(
                f"{path}: the merges depend on each other in a cycle: {cycle}",
                "a merge can use only merges that do not use it",
            )
        state[step.index] = "visiting"
        for need in step.needs:
            visit(by_name[need], [*chain, step.name or "final"])
        state[step.index] = "done"
        ordered.append(step)

    for step in steps:
        visit(step, [])
    return ordered
