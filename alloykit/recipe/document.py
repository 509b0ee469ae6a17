"""Reading a recipe's YAML (file, text or dict) and pointing errors at the right line."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import yaml

from alloykit.errors import RecipeError

T = TypeVar("T")

_KEY_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")
_YAML_SUFFIXES = (".yaml", ".yml")


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key repeated in one mapping is an error.

    PyYAML silently keeps the last value, which hides mistakes such as two ``parameters:``.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


@dataclass(frozen=True)
class RecipeDocument:
    """The recipe's top-level mapping, plus what is needed to say where an error is."""

    data: dict[str, Any]
    source_file: Path | None = None
    text: str | None = None

    @property
    def label(self) -> str:
        if self.source_file is not None:
            return str(self.source_file)
        return "recipe" if self.text is None else "recipe text"

    def locate(self, key_path: str) -> str | None:
        """``"<file>, line N"`` for a key path such as ``models[2].parameters.density``."""
        if self.text is None or not key_path:
            return None
        line = _line_of(self.text, key_path)
        return None if line is None else f"{self.label}, line {line}"


def fail(key_path: str, message: str, hint: str | None = None) -> NoReturn:
    """Raise a :class:`RecipeError` about ``key_path``; ``load_recipe`` adds file and line."""
    error = RecipeError(f"{key_path}: {message}" if key_path else message, hint)
    error.key_path = key_path  # type: ignore[attr-defined]
    raise error


def read_document(
    source: str | Path | dict[str, Any], source_file: Path | None = None
) -> RecipeDocument:
    """Accept a YAML file path, YAML text or an already parsed mapping (``source_file``: the
    file a mapping came from, against which its relative paths resolve)."""
    if isinstance(source, dict):
        return RecipeDocument(copy.deepcopy(source), source_file)
    if isinstance(source, Path):
        return _parse(_read_file(source), source)
    if not isinstance(source, str):
        raise RecipeError(
            f"cannot read a recipe from a {type(source).__name__}",
            "pass a path to a YAML file, YAML text, or a dict",
        )
    if "\n" not in source and (source.endswith(_YAML_SUFFIXES) or Path(source).is_file()):
        path = Path(source)
        return _parse(_read_file(path), path)
    return _parse(source, None)


def _read_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError(
            f"recipe file not found: {path}", "check the path (relative paths start at cwd)"
        ) from None
    except IsADirectoryError:
        raise RecipeError(
            f"recipe path is a directory: {path}", "pass the YAML file inside it"
        ) from None
    except UnicodeDecodeError as error:
        raise RecipeError(
            f"{path}: not a UTF-8 text file ({error.reason})", "save the recipe as UTF-8 YAML"
        ) from None
    except OSError as error:
        raise RecipeError(f"cannot read recipe file {path}: {error.strerror}") from None


def _parse(text: str, path: Path | None) -> RecipeDocument:
    label = str(path) if path is not None else "recipe text"
    try:
        data = yaml.load(text, Loader=UniqueKeyLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"{label}, line {mark.line + 1}" if mark is not None else label
        problem = error.problem or error.context or "invalid YAML"
        raise RecipeError(
            f"{where}: invalid YAML: {problem}",
            "check the indentation and that list items start with '- '",
        ) from None
    except yaml.YAMLError as error:
        raise RecipeError(f"{label}: invalid YAML: {error}") from None
    if data is None:
        raise RecipeError(f"{label}: the recipe is empty", "start with merge_method: and models:")
    if not isinstance(data, dict):
        if path is None and "\n" not in text:
            raise RecipeError(
                f"recipe file not found: {text}",
                "pass a path to an existing YAML file, YAML text, or a dict",
            )
        raise RecipeError(
            f"{label}: a recipe must be a mapping of keys (merge_method, models, ...), "
            f"got a {type(data).__name__}",
            "see docs/recipes.md for the format",
        )
    return RecipeDocument(data, path, text)


def split_key_path(key_path: str) -> list[str | int]:
    """``"models[2].parameters"`` → ``["models", 2, "parameters"]``."""
    return [name if name else int(index) for name, index in _KEY_PART.findall(key_path)]


def _line_of(text: str, key_path: str) -> int | None:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    line = None
    for part in split_key_path(key_path):
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            match = next(((k, v) for k, v in node.value if k.value == part), None)
            if match is None:
                break
            line, node = match[0].start_mark.line + 1, match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                break
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def build_located(document: RecipeDocument, build: Callable[[], T]) -> T:
    """Run ``build``; prefix any RecipeError with the file and line of its key path."""
    try:
        return build()
    except RecipeError as error:
        key_path = getattr(error, "key_path", "")
        where = document.locate(key_path) or (
            document.label if document.source_file is not None else None
        )
        if where is None:
            raise
        raise RecipeError(f"{where}: {error.message}", error.hint) from None
