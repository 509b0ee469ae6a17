"""Model card (README.md) and provenance of a merged model: recipe, inputs and their hashes."""

from __future__ import annotations

import hashlib
import re
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import yaml

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


NOT_HASHED = "not computed (merge with --hash-inputs)"


def file_sha256(path: Path, compute: bool = True) -> str:
    """SHA-256 of a file; free for Hugging Face cache files, whose blob name is their hash.

    Other files are hashed only when ``compute``: at about 1 GB/s per core, hashing the inputs
    of a 7B merge costs more CPU than the merge itself.
    """
    target = path.resolve()
    if path.is_symlink() and _HEX64.match(target.name) and target.parent.name == "blobs":
        return target.name
    if not compute:
        return NOT_HASHED
    digest = hashlib.sha256()
    with target.open("rb") as handle:
        while chunk := handle.read(8 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


class InputHashes:
    """Hashes input files in a background thread while the merge runs."""

    def __init__(self, files: dict[str, list[Path]], *, compute: bool = True) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="alloykit-hash")
        self._futures: dict[str, list[tuple[Path, Future[str]]]] = {
            ref: [(p, self._pool.submit(file_sha256, p, compute)) for p in paths]
            for ref, paths in files.items()
        }

    def result(self) -> dict[str, dict[str, str]]:
        out = {
            ref: {p.name: future.result() for p, future in items}
            for ref, items in self._futures.items()
        }
        self._pool.shutdown()
        return out

    def cancel(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def model_card(
    *,
    recipe_yaml: dict,
    method: str,
    reference: str,
    version: str,
    seed: int,
    hashes: dict[str, dict[str, str]],
    dropped: int,
) -> str:
    """The README.md of a merged model."""
    lines = [
        "---",
        "library_name: transformers",
        "tags:",
        "- alloykit",
        "- merge",
        "---",
        "",
        f"# Merged model ({method})",
        "",
        f"Made with alloykit {version} on {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}, "
        f"method `{method}`, seed {seed}. Config and tokenizer from `{reference}`.",
        "",
        "## Recipe",
        "",
        "```yaml",
        yaml.safe_dump(recipe_yaml, sort_keys=False).rstrip(),
        "```",
        "",
        "## Inputs",
        "",
        "| model | file | sha256 |",
        "| --- | --- | --- |",
    ]
    for ref, files in hashes.items():
        for name, digest in files.items():
            lines.append(f"| `{ref}` | {name} | `{digest}` |")
    if dropped:
        lines += ["", f"{dropped} input tensors were not used (see `alloykit merge --dry-run`)."]
    return "\n".join(lines) + "\n"
