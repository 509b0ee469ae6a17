"""Reading a model's tokenizer and writing the output's, with the ``tokenizers`` library.

``tokenizer.json`` is read directly (no torch, no transformers import: planning stays light).
A model that ships only a slow tokenizer (``tokenizer.model``, ``vocab.txt``, ...) is converted
by transformers, with ``trust_remote_code=False``: no model's code ever runs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from alloykit.errors import CheckpointError

if TYPE_CHECKING:
    from tokenizers import Tokenizer

FAST_FILE = "tokenizer.json"
SLOW_FILES = ("tokenizer.model", "spiece.model", "vocab.json", "vocab.txt")
# files that describe the slow tokenizer: stale once the fast one gains tokens
_STALE_WHEN_EXTENDED = ("tokenizer.model", "spiece.model", "vocab.json", "vocab.txt", "merges.txt")


def has_tokenizer(root: Path) -> bool:
    """Whether ``root`` holds a tokenizer's vocabulary (not just ``tokenizer_config.json``)."""
    return any((root / name).is_file() for name in (FAST_FILE, *SLOW_FILES))


def load_tokenizer(root: Path, reference: str) -> Tokenizer:
    """The fast tokenizer of the model in ``root``."""
    from tokenizers import Tokenizer

    path = root / FAST_FILE
    try:
        if path.is_file():
            return Tokenizer.from_file(str(path))
        from transformers import AutoTokenizer

        converted = AutoTokenizer.from_pretrained(root, use_fast=True, trust_remote_code=False)
        return Tokenizer.from_str(converted.backend_tokenizer.to_str())
    except Exception as exc:  # the tokenizers and transformers errors share no base class
        raise CheckpointError(
            f"model {reference!r}: cannot read its tokenizer in {root}: {exc}",
            "check the tokenizer files, or name another tokenizer source",
        ) from exc


def vocabulary(tokenizer: Tokenizer) -> dict[str, int]:
    """Token → id, added tokens included (what transformers' ``get_vocab()`` returns)."""
    return tokenizer.get_vocab(with_added_tokens=True)


def write_extended(tokenizer: Tokenizer, template: Path, directory: Path) -> None:
    """Save ``tokenizer`` (a source's tokenizer with tokens added) into ``directory``, with the
    source's other tokenizer files (``template``) and its added tokens listed in
    ``tokenizer_config.json`` as transformers expects."""
    from alloykit.checkpoint.model_files import TOKENIZER_FILES

    for name in TOKENIZER_FILES:
        path = template / name
        if name != FAST_FILE and name not in _STALE_WHEN_EXTENDED and path.is_file():
            shutil.copyfile(path, directory / name)
    tokenizer.save(str(directory / FAST_FILE))
    config_path = directory / "tokenizer_config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    if "added_tokens_decoder" in config:
        config["added_tokens_decoder"] = {
            str(index): {
                "content": token.content,
                "lstrip": token.lstrip,
                "normalized": token.normalized,
                "rstrip": token.rstrip,
                "single_word": token.single_word,
                "special": token.special,
            }
            for index, token in sorted(tokenizer.get_added_tokens_decoder().items())
        }
    config.setdefault("tokenizer_class", "PreTrainedTokenizerFast")
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
