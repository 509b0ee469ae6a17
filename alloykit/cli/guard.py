"""One-line errors for users; tracebacks only with --debug."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import typer
from rich.console import Console

from alloykit.errors import AlloyError, is_disk_full

T = TypeVar("T")
stderr = Console(stderr=True, highlight=False, soft_wrap=True)


@contextmanager
def guarded(debug: bool) -> Iterator[None]:
    """Turn exceptions into exit codes: 2 bad input, 1 internal failure, 130 interrupted."""
    try:
        yield
    except AlloyError as exc:
        if debug:
            traceback.print_exc()
        stderr.print(f"[bold red]error:[/] {_escape(str(exc))}")
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        stderr.print(
            "[yellow]interrupted[/]: partial output kept; rerun the same command to resume"
        )
        raise typer.Exit(130) from None
    except (typer.Exit, typer.Abort):
        raise
    except Exception as exc:
        if is_disk_full(exc):
            if debug:
                traceback.print_exc()
            where = f" writing {exc.filename}" if getattr(exc, "filename", None) else ""
            stderr.print(
                f"[bold red]error:[/] no space left on the device{_escape(where)} "
                "(hint: free some space, or write the output to another filesystem)"
            )
            raise typer.Exit(2) from None
        if debug:
            traceback.print_exc()
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        stderr.print(
            f"[bold red]internal error:[/] {type(exc).__name__}: {_escape(first_line)}"
            f"{_origin(exc)} (rerun with --debug for the full trace, and please report it)"
        )
        raise typer.Exit(1) from None


def run(debug: bool, fn: Callable[[], T]) -> T:
    with guarded(debug):
        return fn()
    raise AssertionError("unreachable")


def _origin(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    return f" at {frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno}" if frames else ""


def _escape(text: str) -> str:
    return text.replace("[", "\\[")


def is_tty() -> bool:
    return sys.stderr.isatty()
