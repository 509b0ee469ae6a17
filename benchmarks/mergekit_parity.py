"""Same recipe, same result: run mergekit-format recipes through alloykit and mergekit 0.1.5
and compare every output tensor.

    python benchmarks/mergekit_parity.py [--mergekit-venv PATH] [--jobs 2] [--only TEXT]

Tiny random models (see ``parity_recipes.FAMILIES``) are built once into the cache directory.
mergekit runs from its own virtual environment (``--mergekit-venv``; by default one is created
in the cache with the CPU build of torch, then ``mergekit==0.1.5``). Each recipe is run with
both tools; outputs must have the same tensor names, shapes and dtypes, values within the
tolerance (relative to each tensor's largest magnitude: 1e-5 for float32, the dtype's epsilon
for bfloat16/float16) and the same ``config.json``. Random recipes are compared by statistics
of the change from the base. A deliberate, documented alloykit deviation is marked ``known``
on its case and reported as "differs (known)".

Every alloykit output must load in transformers with no missing, unexpected or mismatched key.
A mergekit output that does not load is reported as "mergekit output broken" (the tensors both
wrote are still compared); a recipe mergekit 0.1.5 cannot run, with the reason stated on the
case (``mergekit_fails``), as "only alloykit runs".

Exits 1 if a deterministic recipe differs (other than known) or one tool fails alone (unless the
case states why mergekit fails); a method alloykit does not have yet ("not in alloykit") and a
recipe both tools refuse do not count.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from parity_mergekit_suite import SUITE, SUITE_FAMILIES, build_tokenizer_models
from parity_recipes import CASES as OWN_CASES
from parity_recipes import FAMILIES as OWN_FAMILIES
from parity_recipes import ParityCase, bind
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = REPO / ".benchcache"
TORCH_PIN = "torch==2.13.0"
MERGEKIT_PIN = "mergekit==0.1.5"
FLOAT32_TOLERANCE = 1e-5
IGNORED_CONFIG_KEYS = frozenset({"transformers_version", "_name_or_path"})
RANDOM_CHANGED_SLACK = 0.02  # absolute difference allowed in the fraction of changed entries
RANDOM_NORM_SLACK = 0.10  # relative difference allowed in the norm of (output - base)
RUN_TIMEOUT_S = 900

Tensors = dict[str, torch.Tensor]

CASES: tuple[ParityCase, ...] = (*OWN_CASES, *SUITE)
"""alloykit's own parity recipes, then mergekit's test and example recipes."""
FAMILIES = {**OWN_FAMILIES, **SUITE_FAMILIES}


@dataclass
class RunOutcome:
    """One tool's run of one recipe."""

    ok: bool
    seconds: float
    output: str  # combined stdout and stderr

    def last_line(self, limit: int = 160) -> str:
        """The last line of output (where both tools put their error), shortened."""
        lines = [line.strip() for line in self.output.splitlines() if line.strip()]
        line = lines[-1] if lines else "(no output)"
        return line if len(line) <= limit else line[: limit - 3] + "..."


@dataclass
class Comparison:
    """Tensor-by-tensor agreement of two outputs."""

    compared: int = 0
    max_abs: float = 0.0
    max_rel: float = 0.0
    worst: str = ""
    beyond: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@dataclass
class CaseResult:
    """What the table shows for one recipe."""

    case: ParityCase
    verdict: str
    failed: bool
    detail: str = ""
    compared: int | None = None
    max_abs: float | None = None
    max_rel: float | None = None
    seconds: tuple[float, float] = (0.0, 0.0)  # alloykit, mergekit


# -- inputs --------------------------------------------------------------------------------
def family_models(cache: Path, key: str) -> dict[str, Path]:
    """The tiny models of ``FAMILIES[key]``, built on first use and reused afterwards: a base
    and fine-tunes of it, or (``independent``) separately initialised models, as mergekit's
    own tests use."""
    from alloykit.tiny_models import build_finetune, build_model, build_multimodal

    spec = FAMILIES[key]
    root = cache / "parity-models" / key
    names = ["base"] + [f"ft{i + 1}" for i in range(spec["finetunes"])]
    marker = root / ".complete"
    if marker.exists() and json.loads(marker.read_text()) == spec:
        return {name: root / name for name in names}
    shutil.rmtree(root, ignore_errors=True)
    if spec.get("tokenizers"):
        build_tokenizer_models(root)
        marker.write_text(json.dumps(spec))
        return {name: root / name for name in names}

    def build(directory: Path, seed: int) -> Path:
        if "multimodal" in spec:
            return build_multimodal(spec["multimodal"], directory, seed=seed)
        return build_model(spec["family"], directory, seed=seed, **spec.get("overrides", {}))

    base = build(root / "base", 0)
    for index, name in enumerate(names[1:]):
        if spec.get("independent"):
            build(root / name, 100 + index)
        else:
            build_finetune(base, root / name, seed=100 + index, scale=spec["scale"])
    marker.write_text(json.dumps(spec))
    return {name: root / name for name in names}


def ensure_mergekit(venv: Path) -> Path:
    """``mergekit-yaml`` of ``venv``, creating the venv first if it has none.

    torch is installed before mergekit, pinned to the CPU build available offline: left to
    mergekit's requirements, pip would pull a multi-GB CUDA build.
    """
    exe = venv / "bin" / "mergekit-yaml"
    if exe.exists():
        return exe
    print(f"creating {venv} ({TORCH_PIN}, then {MERGEKIT_PIN})", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    for requirement in (TORCH_PIN, MERGEKIT_PIN):
        subprocess.run([python, "-m", "pip", "install", "-q", requirement], check=True)
    return exe


def alloykit_command() -> list[str]:
    """The ``alloykit`` entry point of the running interpreter's environment."""
    entry_point = Path(sys.executable).parent / "alloykit"
    if entry_point.exists():
        return [str(entry_point)]
    return [sys.executable, "-c", "from alloykit.cli import main; main()"]


# -- running -------------------------------------------------------------------------------
def tool_env(jobs: int) -> dict[str, str]:
    """Offline, and one BLAS thread pool per concurrent job."""
    threads = str(max(1, (os.cpu_count() or 1) // jobs))
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
    }


def run_tool(command: list[str], env: dict[str, str]) -> RunOutcome:
    start = time.perf_counter()
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, env=env, timeout=RUN_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        return RunOutcome(False, time.perf_counter() - start, f"timed out after {RUN_TIMEOUT_S}s")
    output = done.stdout + done.stderr
    return RunOutcome(done.returncode == 0, time.perf_counter() - start, output)


LEGACY_PREFIXES = (
    ("language_model.model.", "model.language_model."),
    ("language_model.lm_head.", "lm_head."),
    ("vision_tower.", "model.vision_tower."),
    ("multi_modal_projector.", "model.multi_modal_projector."),
)
"""transformers 5 renames Llava-style checkpoints on load (legacy → current layout); mergekit
0.1.5 writes the current names, alloykit keeps the inputs' names. Outputs are compared under
the current names."""


def current_name(name: str) -> str:
    for old, new in LEGACY_PREFIXES:
        if name.startswith(old):
            return new + name[len(old) :]
    return name


def load_output(directory: Path) -> Tensors:
    tensors: Tensors = {}
    for shard in sorted(directory.glob("*.safetensors")):
        tensors.update(load_file(shard))
    return {current_name(name): tensor for name, tensor in tensors.items()}


def load_config(directory: Path) -> dict[str, Any]:
    return json.loads((directory / "config.json").read_text())


def loading_problems(directory: Path) -> str:
    """What transformers reports when it loads the output (missing, unexpected, mismatched
    keys: alloykit's own load check), in one line; empty when the output loads cleanly."""
    from alloykit.checkpoint.load_check import check_loads
    from alloykit.errors import OutputMismatchError

    try:
        check_loads(directory)
    except OutputMismatchError as error:
        return error.message.split(": ", 1)[-1]
    return ""


# -- comparing -----------------------------------------------------------------------------
def tolerance(dtype: torch.dtype) -> float:
    """Allowed difference relative to a tensor's largest magnitude."""
    if dtype in (torch.bfloat16, torch.float16):
        return torch.finfo(dtype).eps
    return FLOAT32_TOLERANCE


def compare_tensors(reference: Tensors, candidate: Tensors) -> Comparison:
    """Compare ``candidate`` (alloykit) against ``reference`` (mergekit), tensor by tensor."""
    result = Comparison()
    missing = sorted(set(reference) - set(candidate))
    extra = sorted(set(candidate) - set(reference))
    if missing:
        result.problems.append(f"missing in alloykit: {', '.join(missing)}")
    if extra:
        result.problems.append(f"only in alloykit: {', '.join(extra)}")
    for name in sorted(set(reference) & set(candidate)):
        want, got = reference[name], candidate[name]
        if want.shape != got.shape:
            result.problems.append(
                f"{name}: shape alloykit {list(got.shape)}, mergekit {list(want.shape)}"
            )
            continue
        if want.dtype != got.dtype:
            result.problems.append(f"{name}: dtype alloykit {got.dtype}, mergekit {want.dtype}")
        result.compared += 1
        if want.numel() == 0:
            continue
        diff = (want.double() - got.double()).abs().max().item()
        scale = max(want.double().abs().max().item(), got.double().abs().max().item())
        rel = diff / scale if scale > 0 else 0.0
        if rel > tolerance(want.dtype) or not math.isfinite(diff):
            result.beyond.append(name)
        if diff > result.max_abs or not math.isfinite(diff):
            result.max_abs, result.worst = diff, name
        result.max_rel = max(result.max_rel, rel)
    return result


def config_differences(reference: dict[str, Any], candidate: dict[str, Any]) -> list[str]:
    """One line per config.json entry that differs (transformers_version aside)."""
    keys = (set(reference) | set(candidate)) - IGNORED_CONFIG_KEYS
    return [
        f"config {key}: alloykit {candidate.get(key)!r}, mergekit {reference.get(key)!r}"
        for key in sorted(keys)
        if reference.get(key) != candidate.get(key)
    ]


def change_statistics(output: Tensors, base: Tensors) -> tuple[float, float]:
    """Fraction of entries that differ from the base, and the norm of ``output - base``."""
    changed = total = 0
    square = 0.0
    for name, tensor in output.items():
        delta = tensor.double() - base[name].double()
        changed += int((delta != 0).sum())
        total += delta.numel()
        square += float(delta.square().sum())
    return changed / max(total, 1), math.sqrt(square)


# -- one case ------------------------------------------------------------------------------
@dataclass
class Context:
    """What every case needs: models, tools, a scratch directory."""

    models: dict[str, dict[str, Path]]
    mergekit: Path
    work: Path
    env: dict[str, str]


def run_case(case: ParityCase, context: Context) -> CaseResult:
    """Write the recipe, run alloykit then mergekit on it, and judge the two outputs."""
    paths = {name: str(path) for name, path in context.models[case.family].items()}
    folder = context.work / case.name.replace(" ", "_").replace("/", "_")
    folder.mkdir(parents=True, exist_ok=True)
    recipe = folder / "recipe.yml"
    recipe.write_text(yaml.safe_dump(bind(case.recipe, paths), sort_keys=False))
    ours, theirs = folder / "alloykit", folder / "mergekit"
    alloy = run_tool([*alloykit_command(), "merge", str(recipe), str(ours)], context.env)
    if not alloy.ok and "unknown merge method" in alloy.output:
        return CaseResult(case, "not in alloykit", False, seconds=(alloy.seconds, 0.0))
    mergekit_options = ["--no-copy-tokenizer", "--quiet", "--random-seed", "0"]
    merge = run_tool(
        [str(context.mergekit), str(recipe), str(theirs), *mergekit_options], context.env
    )
    seconds = (alloy.seconds, merge.seconds)
    if not merge.ok and not alloy.ok:
        detail = f"mergekit: {merge.last_line()} / alloykit: {alloy.last_line()}"
        return CaseResult(case, "both refuse", False, detail, seconds=seconds)
    if not alloy.ok:
        return CaseResult(case, "alloykit error", True, alloy.last_line(), seconds=seconds)
    if case.invalid:
        return CaseResult(case, "alloykit runs an invalid recipe", True, seconds=seconds)
    ours_loads = loading_problems(ours)
    if ours_loads:
        return CaseResult(case, "alloykit output broken", True, ours_loads, seconds=seconds)
    if not merge.ok:
        detail = f"{merge.last_line()}" + (
            f"; {case.mergekit_fails}" if case.mergekit_fails else ""
        )
        verdict = "only alloykit runs" if case.mergekit_fails else "mergekit error"
        return CaseResult(case, verdict, not case.mergekit_fails, detail, seconds=seconds)
    reference, candidate = load_output(theirs), load_output(ours)
    theirs_loads = loading_problems(theirs)
    configs = config_differences(load_config(theirs), load_config(ours))
    if theirs_loads:
        result = judge_broken_reference(case, reference, candidate, theirs_loads, seconds)
    elif case.random:
        base = load_output(Path(paths["base"]))
        return judge_random(case, reference, candidate, base, configs, seconds)
    else:
        comparison = compare_tensors(reference, candidate)
        result = judge_deterministic(case, comparison, configs, seconds)
    half = case.recipe.get("dtype")
    if result.failed and half in HALF_DTYPES:
        return rejudge_in_float32(case, context, result)
    return result


HALF_DTYPES = ("bfloat16", "float16")


def rejudge_in_float32(case: ParityCase, context: Context, half: CaseResult) -> CaseResult:
    """A half-precision recipe that differs: mergekit casts the inputs to the recipe dtype and
    computes in it, alloykit computes in float32 and casts once (DESIGN.md). The same recipe
    with ``dtype: float32`` tells that apart from a real difference: if it matches, the case is
    reported as a compute-dtype difference (not a failure), with both runs' numbers."""
    dtype = case.recipe["dtype"]
    twin = dataclasses.replace(
        case, name=f"{case.name} (float32)", recipe={**case.recipe, "dtype": "float32"}
    )
    again = run_case(twin, context)
    if again.failed or again.max_rel is None:
        detail = f"{half.detail}; with dtype float32: {again.verdict} {again.detail}".strip()
        return dataclasses.replace(half, detail=detail)
    detail = (
        f"in {dtype}: {half.detail}; with dtype float32 the outputs match "
        f"(max rel diff {again.max_rel:.3g}): mergekit computes in {dtype}, alloykit in float32"
    )
    verdict = f"{dtype} compute only"
    if again.verdict.startswith("mergekit output broken"):
        verdict = f"mergekit output broken; {verdict}"
    return dataclasses.replace(half, verdict=verdict, failed=False, detail=detail)


def judge_deterministic(
    case: ParityCase, comparison: Comparison, configs: list[str], seconds: tuple[float, float]
) -> CaseResult:
    """Any structural, config or value difference fails, unless the case marks it as known."""
    problems = comparison.problems + configs
    if comparison.beyond:
        problems.append(
            f"{len(comparison.beyond)}/{comparison.compared} tensors beyond tolerance, "
            f"worst {comparison.worst}"
        )
    differs = bool(problems)
    if not differs:
        verdict = "match"
    elif case.known:
        verdict = "differs (known)"
    else:
        verdict = "DIFFERS"
    detail = "; ".join(problems + ([case.known] if differs and case.known else []))
    return CaseResult(
        case,
        verdict,
        differs and not case.known,
        detail,
        comparison.compared,
        comparison.max_abs,
        comparison.max_rel,
        seconds,
    )


def judge_broken_reference(
    case: ParityCase,
    reference: Tensors,
    candidate: Tensors,
    theirs_loads: str,
    seconds: tuple[float, float],
) -> CaseResult:
    """mergekit's output does not load (it lacks tensors, say): the tensors both wrote are
    still compared; alloykit's output loaded cleanly already."""
    common = set(reference) & set(candidate)
    comparison = compare_tensors(
        {k: reference[k] for k in common}, {k: candidate[k] for k in common}
    )
    detail = (
        f"mergekit's output: {theirs_loads}; alloykit's loads cleanly; "
        f"{len(common)} tensors in both"
    )
    differs = bool(comparison.beyond or comparison.problems) and not case.random
    if differs:
        detail += f"; {len(comparison.beyond)} beyond tolerance, worst {comparison.worst}"
    return CaseResult(
        case,
        "mergekit output broken" + ("; common tensors DIFFER" if differs else ""),
        differs,
        detail,
        comparison.compared,
        None if case.random else comparison.max_abs,
        None if case.random else comparison.max_rel,
        seconds,
    )


def judge_random(
    case: ParityCase,
    reference: Tensors,
    candidate: Tensors,
    base: Tensors,
    configs: list[str],
    seconds: tuple[float, float],
) -> CaseResult:
    """Same structure and config, and similar statistics of the change from the base."""
    structure = compare_tensors(reference, candidate)
    problems = structure.problems + configs
    if problems:
        return CaseResult(
            case, "DIFFERS", True, "; ".join(problems), structure.compared, seconds=seconds
        )
    theirs_changed, theirs_norm = change_statistics(reference, base)
    ours_changed, ours_norm = change_statistics(candidate, base)
    ratio = ours_norm / theirs_norm if theirs_norm else float("inf")
    agree = (
        abs(ours_changed - theirs_changed) <= RANDOM_CHANGED_SLACK
        and abs(ratio - 1) <= RANDOM_NORM_SLACK
    )
    detail = (
        f"entries changed: alloykit {ours_changed:.1%}, mergekit {theirs_changed:.1%}; "
        f"norm of (out - base): alloykit / mergekit = {ratio:.3f}"
    )
    verdict = "random: stats agree" if agree else "random: stats DIFFER"
    return CaseResult(case, verdict, False, detail, structure.compared, seconds=seconds)


# -- report --------------------------------------------------------------------------------
def render(results: list[CaseResult], markdown: bool) -> str:
    """The results table, then one line of detail per recipe that has any."""
    header = ("recipe", "method", "family", "tensors", "max abs diff", "max rel diff", "verdict")
    rows = [
        (
            r.case.name,
            r.case.method,
            r.case.family,
            "-" if r.compared is None else str(r.compared),
            "-" if r.max_abs is None else f"{r.max_abs:.3g}",
            "-" if r.max_rel is None else f"{r.max_rel:.3g}",
            r.verdict,
        )
        for r in results
    ]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
    else:
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
        lines = [
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in [header, *rows]
        ]
        lines.insert(1, "  ".join("-" * w for w in widths))
    notes = [f"- {r.case.name}: {r.detail}" for r in results if r.detail]
    return "\n".join([*lines, "", *notes] if notes else lines)


def run_all(cases: list[ParityCase], context: Context, jobs: int) -> list[CaseResult]:
    def one(case: ParityCase) -> CaseResult:
        result = run_case(case, context)
        print(f"  {case.name}: {result.verdict}", file=sys.stderr, flush=True)
        return result

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(one, cases))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help="models, venv")
    parser.add_argument(
        "--mergekit-venv",
        type=Path,
        help="venv with mergekit 0.1.5 (default: CACHE/mergekit-venv, created if missing)",
    )
    parser.add_argument("--jobs", type=int, default=2, help="recipes run at once")
    parser.add_argument("--only", action="append", help="run recipes whose name contains this")
    parser.add_argument("--keep", type=Path, help="keep recipes and outputs in this directory")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    return parser.parse_args(argv)


def select(cases: tuple[ParityCase, ...], only: list[str] | None) -> list[ParityCase]:
    return [c for c in cases if not only or any(text in c.name for text in only)]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    cases = select(CASES, args.only)
    if not cases:
        print("no recipe matches --only", file=sys.stderr)
        return 2
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    mergekit = ensure_mergekit(args.mergekit_venv or args.cache_dir / "mergekit-venv")
    models = {key: family_models(args.cache_dir, key) for key in {c.family for c in cases}}
    work = args.keep or Path(tempfile.mkdtemp(prefix="parity-", dir=args.cache_dir))
    cleanup: Callable[[], None] = (lambda: None) if args.keep else (lambda: shutil.rmtree(work))
    try:
        context = Context(models, mergekit, work, tool_env(args.jobs))
        results = run_all(cases, context, max(1, args.jobs))
    finally:
        cleanup()
    print(render(results, args.markdown))
    alloy = sum(r.seconds[0] for r in results)
    merge = sum(r.seconds[1] for r in results)
    print(
        f"\n{len(results)} recipes in {time.perf_counter() - started:.0f}s wall "
        f"(alloykit runs {alloy:.0f}s, mergekit runs {merge:.0f}s in total)"
    )
    return 1 if any(r.failed for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
