"""The ``alloykit`` command line: thin wrappers that parse, call the API, and render."""

from alloykit.cli.app import app, main

__all__ = ["app", "main"]
