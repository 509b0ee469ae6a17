"""Helpers for tests of user-defined methods: a registry restored after each test, modules
written outside the package, and plugins installed as bare ``*.dist-info`` directories."""

from __future__ import annotations

import re
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alloykit.methods import contract, plugins, registry

DOCS = Path(__file__).resolve().parents[2] / "docs" / "methods-api.md"


@contextmanager
def isolated_registry() -> Iterator[None]:
    """Plugins are looked for afresh inside the block; methods defined, and plugins loaded,
    there are forgotten after it."""
    methods = dict(registry._REGISTRY)
    implementations = dict(contract._IMPLEMENTATIONS)
    loaded = plugins._loaded
    path = list(sys.path)
    modules = set(sys.modules)
    plugins._loaded = False
    try:
        yield
    finally:
        registry._REGISTRY.clear()
        registry._REGISTRY.update(methods)
        contract._IMPLEMENTATIONS.clear()
        contract._IMPLEMENTATIONS.update(implementations)
        plugins._loaded = loaded
        sys.path[:] = path
        for name in set(sys.modules) - modules:
            del sys.modules[name]


def docs_example() -> str:
    """The complete example module of docs/methods-api.md (its first Python block)."""
    return re.findall(r"```python\n(.*?)```", DOCS.read_text(), re.S)[0]


def write_module(directory: Path, name: str, source: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    return path


def install_plugin(site: Path, dist: str, entry_points: dict[str, str]) -> None:
    """Make ``site`` hold distribution ``dist`` whose ``alloykit.methods`` entry points are
    ``{name: module}``, and put it on ``sys.path`` (the modules must be in ``site`` too)."""
    info = site / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    lines = [f"{name} = {module}" for name, module in entry_points.items()]
    (info / "entry_points.txt").write_text("[alloykit.methods]\n" + "\n".join(lines) + "\n")
    if str(site) not in sys.path:
        sys.path.insert(0, str(site))
