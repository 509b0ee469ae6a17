"""Planning needs no torch: importing alloykit, opening checkpoints by headers, reading bytes,
fingerprinting a model (for its statistics files) and planning (``alloykit merge --dry-run``)
never import it.

Importing torch takes about 3 s, more than a small merge; the merges the raw path runs do
without it too (tests/e2e/test_stored_lane.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import builtins, json, sys

importers = set()
real_import = builtins.__import__


def watching(name, globals=None, locals=None, fromlist=(), level=0):
    if level == 0 and name.split(".")[0] == "torch":
        importers.add((globals or {}).get("__name__", "?"))
    return real_import(name, globals, locals, fromlist, level)


builtins.__import__ = watching

import numpy as np

import alloykit
import alloykit.api, alloykit.arch, alloykit.cli, alloykit.cli.app, alloykit.dtypes
import alloykit.engine, alloykit.plan, alloykit.planner, alloykit.recipe
import alloykit.engine.loop, alloykit.engine.raw
from alloykit.calibrate.fingerprint import fingerprint
from alloykit.checkpoint import card, model_files, safetensors_format, sink, source, statistics
from alloykit.cli.app import app

assert alloykit.__file__.startswith(sys.argv[1]), alloykit.__file__
model = source.open_source(sys.argv[2])
for name in model.tensors:
    entry = model.entry(name)
    safetensors_format.read_into(entry, 0, 1, np.empty(entry.nbytes, np.uint8))
assert len(fingerprint(model)) == 64
alloykit.plan(sys.argv[3])
app(["merge", sys.argv[3], "--dry-run"], standalone_mode=False)
print(json.dumps(sorted(importers)), "torch" in sys.modules)
"""


def test_planning_imports_no_torch(llama, tmp_path):
    recipe = tmp_path / "linear.yaml"
    models = [{"model": str(llama[f"ft{i}"]), "parameters": {"weight": 1.0}} for i in (1, 2)]
    recipe.write_text(yaml.safe_dump({"merge_method": "linear", "models": models}))
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(ROOT), str(llama["base"]), str(recipe)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    importers, imported = result.stdout.splitlines()[-1].rsplit(" ", 1)
    assert json.loads(importers) == []
    assert imported == "False"
