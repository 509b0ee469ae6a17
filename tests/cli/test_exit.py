"""What the ``alloykit`` entry point does around its subcommand."""

from __future__ import annotations

import gc
import sys

import pytest

from alloykit.cli import main


def test_the_command_freezes_every_object_before_the_process_exits(monkeypatch) -> None:
    """The interpreter's last collection at exit skips frozen objects: 1.2 s of teardown
    after a merge otherwise (torch's objects)."""
    monkeypatch.setattr(sys, "argv", ["alloykit", "methods"])
    gc.unfreeze()
    try:
        assert gc.get_freeze_count() == 0
        with pytest.raises(SystemExit) as exited:
            main()
        assert exited.value.code == 0
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
