"""Large imports with the cyclic garbage collector off.

Importing torch creates a couple of hundred thousand objects; the collector would walk them
again and again while they are made, and once more after (about 0.4 s of torch's 3 s import
here), though none of them is garbage. So collection is off during such imports, and what
they made is then frozen (``gc.freeze``: kept out of collections until a merge's end
unfreezes it).
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """Run the block's imports with the collector off, then freeze what they made (nothing,
    when every module was imported already: a merge then leaves the collector as it was)."""
    collecting = gc.isenabled()
    modules = len(sys.modules)
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            if len(sys.modules) != modules:
                gc.freeze()
            gc.enable()
