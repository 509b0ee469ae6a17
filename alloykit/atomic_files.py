"""Files that appear whole or not at all: written beside their place, then renamed onto it.

A process killed while writing leaves at most a hidden partial file, never a truncated file
under the real name that a later run would read as complete (``os.replace`` is atomic within
a filesystem).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def written_whole(path: Path) -> Iterator[Path]:
    """The partial path to write ``path``'s content to; on leaving the block it is renamed
    onto ``path``, or removed if the block raised. Unique per process and thread."""
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}-{threading.get_ident()}")
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
