"""Merge methods of installed packages: the ``alloykit.methods`` entry-point group.

A package adds methods by naming, in its metadata, modules that define them with
:func:`alloykit.merge_method`::

    [project.entry-points."alloykit.methods"]
    my_methods = "my_package.methods"

The modules are imported once, the first time a method name is not found among those already
known or the methods are listed. A plugin that fails to import (or declares a method wrongly)
costs one warning line naming its distribution, not the command: the other methods still work.
"""

from __future__ import annotations

import logging
import threading
from importlib.metadata import EntryPoint, entry_points

GROUP = "alloykit.methods"

_log = logging.getLogger("alloykit")
_lock = threading.RLock()  # re-entrant: a plugin being imported may look a method up
_loaded = False


def load_once() -> None:
    """Import every plugin module of :data:`GROUP` the first time this is called."""
    global _loaded
    with _lock:
        if _loaded:
            return
        _loaded = True
        for entry_point in entry_points(group=GROUP):
            _load(entry_point)


def _load(entry_point: EntryPoint) -> None:
    try:
        entry_point.load()
    except Exception as exc:  # a broken plugin must not break the command
        dist = entry_point.dist.name if entry_point.dist is not None else "an unknown package"
        reason = " ".join(str(exc).split()) or type(exc).__name__
        _log.warning(
            "alloykit: skipped merge methods %r of %s: %s", entry_point.value, dist, reason
        )
