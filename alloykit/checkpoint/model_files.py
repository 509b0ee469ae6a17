"""The non-tensor files of an output model: config, tokenizer, generation config, chat template."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from alloykit.checkpoint.source import ModelSource

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "spiece.model",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
)
CARRIED_FILES = ("generation_config.json",)


def write_config(config: dict[str, Any], directory: Path) -> None:
    (directory / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def copy_tokenizer(source: ModelSource | Path, directory: Path) -> list[str]:
    """Copy the tokenizer files of ``source`` (a model, or its directory); return the names
    copied."""
    root = source if isinstance(source, Path) else source.root
    copied = []
    for name in TOKENIZER_FILES:
        path = root / name
        if path.is_file():
            shutil.copyfile(path, directory / name)
            copied.append(name)
    return copied


def copy_carried(source: ModelSource, directory: Path) -> list[str]:
    copied = []
    for name in CARRIED_FILES:
        path = source.root / name
        if path.is_file():
            shutil.copyfile(path, directory / name)
            copied.append(name)
    return copied


def write_chat_template(text: str, directory: Path) -> None:
    """Install a chat template (resolved by :mod:`alloykit.checkpoint.chat_templates`) as
    ``chat_template.jinja``, which transformers prefers to the copied tokenizer config's."""
    (directory / "chat_template.jinja").write_text(text, encoding="utf-8")
    config_path = directory / "tokenizer_config.json"
    if config_path.exists():
        config = json.loads(config_path.read_text())
        config.pop("chat_template", None)
        config_path.write_text(json.dumps(config, indent=2) + "\n")
