"""One writer per output: an exclusive lock next to ``OUT.partial/`` while a merge writes it.

Without it, a second merge into the same OUT deleted the first one's partial directory under
it (the first then failed with an internal FileNotFoundError). The lock is ``fcntl.flock`` on
``OUT.partial.lock``, a sibling (a fresh merge deletes and remakes the partial directory),
holding the owner's pid and host for the refusal message. The kernel drops the lock when its
process ends, however it ends (kill -9 included), so a dead owner's lock is simply taken over.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from alloykit.errors import OutputError


class OutputBusyError(OutputError):
    """Another process is writing the same output."""


class OutputLock:
    """The lock on ``partial_dir``: :meth:`acquire` before touching it, :meth:`release` after
    it is published or abandoned."""

    def __init__(self, partial_dir: Path) -> None:
        self.path = partial_dir.with_name(partial_dir.name + ".lock")
        self.output = partial_dir.with_name(partial_dir.name.removesuffix(".partial"))
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise :class:`OutputBusyError` naming the process holding it."""
        if self._fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _owner(fd)
                os.close(fd)
                raise OutputBusyError(
                    f"output {self.output} is being written by another alloykit ({owner})",
                    "wait for it to finish or stop it, then rerun (a stopped merge resumes)",
                ) from None
            if _same_file(fd, self.path):
                break
            os.close(fd)  # its previous owner removed it between our open and lock: again
        record = {"pid": os.getpid(), "host": socket.gethostname(), "since": int(time.time())}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Remove the lock file and drop the lock (nothing if not held)."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)
            self._fd = None


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _owner(fd: int) -> str:
    """The holder as its lock file names it: ``pid N on HOST since HH:MM:SS``."""
    try:
        record = json.loads(os.pread(fd, 4096, 0) or b"{}")
        since = time.strftime("%H:%M:%S", time.localtime(int(record["since"])))
        return f"pid {int(record['pid'])} on {record['host']} since {since}"
    except (ValueError, KeyError, TypeError):
        return "a process that has not recorded its pid yet"
