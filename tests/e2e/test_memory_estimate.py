"""The dry run's memory estimate: which tensors it counts as held over several passes agrees
with the merges themselves, and it stays within 2x of the peak RSS a merge reaches."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

import alloykit
from alloykit.engine import EngineOptions
from alloykit.engine.memory import estimated_peak_bytes, reads_twice
from alloykit.engine.tensors import CPU, _merging
from alloykit.methods import get_method


def _recipe(method: str, models, **parameters) -> dict:
    recipe: dict = {
        "merge_method": method,
        "models": [{"model": str(models["ft1"])}, {"model": str(models["ft2"])}],
        "parameters": parameters,
    }
    if method != "linear":
        recipe["base_model"] = str(models["base"])
    if method == "slerp":
        recipe["models"] = [{"model": str(models["base"])}, {"model": str(models["ft1"])}]
        recipe["parameters"] = {"t": 0.3}
    return recipe


CASES = [
    ("linear", {}),
    ("task_arithmetic", {}),
    ("ties", {"density": 0.5}),
    ("dare_ties", {"density": 0.5}),
    ("dare_ties", {"density": 0.5, "rescale_mode": "l1"}),
    ("breadcrumbs_ties", {"density": 0.5, "gamma": 0.01}),
    ("della", {"density": 0.5, "epsilon": 0.1}),
    ("model_stock", {}),
    ("slerp", {}),
    ("sce", {}),
]


@pytest.mark.parametrize(("method", "parameters"), CASES)
def test_held_tensors_are_those_whose_merge_makes_passes(llama, method, parameters):
    plan = alloykit.plan(_recipe(method, llama, **parameters))
    for entry in plan.entries[:3]:
        if not get_method(entry.method).streams:
            continue
        passes = next(_merging(plan, entry, CPU).passes(), None) is not None
        assert reads_twice(entry) == passes, entry.name


MEASURED = """
import re, sys
from alloykit.cli import main
sys.argv = ["alloykit", "merge", sys.argv[1], sys.argv[2], "--no-fsync"]
try:
    main()
finally:
    status = open("/proc/self/status").read()
    print(int(re.search(r"VmHWM:\\s+(\\d+) kB", status)[1]) * 1024)
"""
"""The merge's peak RSS, from the kernel's high-water mark of the process (``ru_maxrss`` would
carry over the forking test process's own peak across exec)."""


@pytest.mark.parametrize(("method", "dtype"), [("linear", "bf16"), ("ties", "f32")])
def test_the_estimate_is_within_twice_the_measured_peak(llama, llama_bf16, tmp_path, method, dtype):
    models = llama_bf16 if dtype == "bf16" else llama
    recipe = _recipe(method, models, **({"density": 0.5} if method == "ties" else {}))
    path = tmp_path / "recipe.yml"
    path.write_text(yaml.safe_dump(recipe))
    estimate = estimated_peak_bytes(alloykit.plan(str(path)), EngineOptions())
    done = subprocess.run(
        [sys.executable, "-c", MEASURED, str(path), str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    measured = int(done.stdout.strip().splitlines()[-1])
    assert measured / 2 <= estimate <= measured * 2, (estimate, measured)
