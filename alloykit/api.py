"""The Python API: plan, merge to a directory, merge into memory.

Nothing here imports torch: planning needs none, and the engine imports it only for tensors
that take its torch path (:mod:`alloykit.engine`), so a dry run or a merge the raw path
covers never pays for the import (about 3 s).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alloykit.checkpoint.card import InputHashes, model_card
from alloykit.checkpoint.load_check import changes_layout, check_loads
from alloykit.checkpoint.model_files import (
    copy_carried,
    write_chat_template,
    write_config,
)
from alloykit.checkpoint.sink import (
    DirectorySink,
    OutputTensor,
    StateDictSink,
    check_output_dir,
    disk_full,
)
from alloykit.dtypes import F32, parse_dtype
from alloykit.engine import EngineOptions, execute
from alloykit.engine.budget import available_memory_bytes, default_budget
from alloykit.errors import AlloyError, is_disk_full
from alloykit.plan import Plan, PlanEntry, PlanOptions
from alloykit.planner import make_plan
from alloykit.recipe import load_recipe
from alloykit.recipe.model import Recipe
from alloykit.recipe.multi import MergeStep
from alloykit.vocab.output import write_tokenizer

if TYPE_CHECKING:
    import torch

RecipeLike = Recipe | str | Path | dict[str, Any]
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*$", re.IGNORECASE)
_MERGEKIT_BILLIONS = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*b\s*$", re.IGNORECASE)


def parse_size(text: str | int) -> int:
    """``"5GB"`` / ``"500M"`` / ``1000000`` → bytes (decimal units, as Hugging Face uses).

    A lone ``B`` after a number is mergekit's billion (``--out-shard-size 5B`` is its default,
    5·10⁹ bytes), not bytes: no one means a 5-byte shard or budget.
    """
    if isinstance(text, int):
        return text
    billions = _MERGEKIT_BILLIONS.match(text)
    if billions:
        return int(float(billions[1]) * 10**9)
    match = _SIZE.match(text)
    if not match:
        raise AlloyError(f"invalid size {text!r}", "use e.g. 5GB, 500MB or a number of bytes")
    scale = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}[match[2].upper()]
    return int(float(match[1]) * scale)


@dataclass
class MergeOptions:
    """Everything besides the recipe that shapes a merge."""

    device: str = "cpu"
    threads: int = 2
    dtype: str | None = None
    out_dtype: str | None = None
    out_shard_size: str | int = "5GB"
    seed: int | None = None
    force: bool = False
    allow_pickle: bool = False
    drop_unmapped: bool = False
    vocab_mismatch: str | None = None
    memory_budget: str | int | None = None  # None: a share of the available memory (engine.budget)
    chunk_elements: int | None = None  # values per input per chunk; None: the device default
    hash_inputs: bool = False  # SHA-256 of every input file in the model card
    fsync: bool = True  # flush the output to disk before it takes its final name
    raw_path: bool = True  # False: no tensor takes the torch-free raw path (for comparisons)
    copy_tokenizer: bool = True  # tokenizer files (and the recipe's chat template) to the output
    write_model_card: bool = True  # README.md describing the merge
    check_loads: bool = True  # the output's config and tensors must agree for transformers
    on_done: Callable[[PlanEntry], None] | None = field(default=None, repr=False)

    def plan_options(self) -> PlanOptions:
        return PlanOptions(
            allow_pickle=self.allow_pickle,
            dtype=parse_dtype(self.dtype, "--dtype") if self.dtype else F32,
            out_dtype=parse_dtype(self.out_dtype, "--out-dtype") if self.out_dtype else None,
            seed=self.seed,
            drop_unmapped=self.drop_unmapped,
            vocab_mismatch=self.vocab_mismatch,
        )

    def engine_options(self) -> EngineOptions:
        if self.memory_budget is None:
            available = available_memory_bytes()
            budget = default_budget(available)
        else:
            available, budget = None, parse_size(self.memory_budget)
        return EngineOptions(
            device=self.device,
            threads=self.threads,
            budget_bytes=budget,
            budget_available=available,
            chunk_elements=self.chunk_elements,
            raw_path=self.raw_path,
        )


def _options(options: MergeOptions | None, overrides: dict[str, Any]) -> MergeOptions:
    base = options or MergeOptions()
    unknown = [k for k in overrides if k not in MergeOptions.__dataclass_fields__]
    if unknown:
        raise TypeError(f"unknown merge option(s): {', '.join(unknown)}")
    for key, value in overrides.items():
        setattr(base, key, value)
    return base


def _recipe(recipe: RecipeLike, seed: int | None) -> Recipe:
    return recipe if isinstance(recipe, Recipe) else load_recipe(recipe)


def plan(recipe: RecipeLike, options: MergeOptions | None = None, **overrides: Any) -> Plan:
    """Validate a recipe and open its models by headers: the plan ``--dry-run`` prints.

    Models listed with ``data:`` (and no ``statistics:``) for a method that takes statistics
    are calibrated first, or their statistics taken from the cache
    (:func:`alloykit.calibrate.statistics_for`).
    """
    opts = _options(options, overrides)
    parsed = _recipe(recipe, opts.seed)
    plan_options = opts.plan_options()
    plan_options.statistics.update(_calibrated(parsed, opts))
    return make_plan(parsed, plan_options)


def _calibrated(recipe: Recipe, opts: MergeOptions) -> dict[str, Path]:
    """Statistics files of the models whose entry names ``data:`` but no ``statistics:``."""
    from alloykit.methods import get_method

    try:
        declared = get_method(recipe.merge_method).statistics
    except KeyError:
        return {}  # the planner names the unknown method
    pending = [e for e in recipe.models or () if e.data is not None and e.statistics is None]
    if not declared or not pending:
        return {}
    # Calibration runs models (torch, transformers); imported only when a recipe needs it.
    from alloykit.calibrate import CalibrationSettings, statistics_for
    from alloykit.checkpoint.source import open_source

    settings = CalibrationSettings(kinds=tuple(s.name for s in declared), device=opts.device)
    search = (recipe.source_file.parent,) if recipe.source_file else ()
    found: dict[str, Path] = {}
    for entry in pending:
        if entry.model in found:
            continue
        root = open_source(entry.model, search_dirs=search, allow_pickle=opts.allow_pickle).root
        assert entry.data is not None
        try:
            found[entry.model] = statistics_for(root, recipe.resolve_path(entry.data), settings)
        except AlloyError as exc:
            raise type(exc)(f"{entry.key_path}.data: {exc.message}", exc.hint) from None
    return found


def merge(
    recipe: RecipeLike, out_dir: str | Path, options: MergeOptions | None = None, **overrides: Any
) -> Path:
    """Merge into a Hugging Face model directory, written atomically; return its path.

    Keyword options are those of :class:`MergeOptions` (device, threads, dtype, out_dtype,
    out_shard_size, seed, force, allow_pickle, drop_unmapped, vocab_mismatch, memory_budget).
    """
    opts = _options(options, overrides)
    out = Path(out_dir)
    check_output_dir(out.absolute(), opts.force)
    the_plan = plan(recipe, opts)
    return write_plan(the_plan, out, opts)


def write_plan(the_plan: Plan, out: Path, opts: MergeOptions) -> Path:
    """Execute a plan into ``out`` (resuming a matching interrupted run)."""
    from alloykit import __version__

    outputs = [OutputTensor(e.name, e.dtype, e.shape) for e in the_plan.entries]
    sink = DirectorySink(
        out,
        outputs,
        shard_bytes=parse_size(opts.out_shard_size),
        fingerprint=the_plan.fingerprint(),
        force=opts.force,
        durable=opts.fsync,
    )
    sink.open()
    sink.verify_resumed()
    hashes = InputHashes(
        {ref: src.files for ref, src in the_plan.sources.items()}, compute=opts.hash_inputs
    )
    try:
        execute(the_plan, sink, opts.engine_options(), skip=sink.done, on_done=opts.on_done)
        directory = sink.partial_dir
        write_config(the_plan.config, directory)
        reference = the_plan.sources[the_plan.reference]
        copy_carried(reference, directory)
        recipe = the_plan.recipe
        if opts.copy_tokenizer:
            write_tokenizer(the_plan, directory)
            if the_plan.chat_template is not None:
                write_chat_template(the_plan.chat_template, directory)
        if opts.write_model_card:
            card = model_card(
                recipe_yaml=recipe.raw,
                method=the_plan.description or the_plan.method.name,
                reference=the_plan.reference,
                version=__version__,
                seed=the_plan.seed,
                hashes=hashes.result(),
                dropped=len(the_plan.dropped),
            )
            (directory / "README.md").write_text(card)
        else:
            hashes.cancel()
        check = opts.check_loads and changes_layout(the_plan)
        return sink.commit(check_loads if check else None)
    except AlloyError:
        hashes.cancel()
        sink.abort(keep_for_resume=False)
        raise
    except OSError as exc:
        hashes.cancel()
        sink.abort(keep_for_resume=True)
        if is_disk_full(exc):
            raise disk_full(sink.partial_dir, exc) from exc
        raise
    except BaseException:
        hashes.cancel()
        sink.abort(keep_for_resume=True)
        raise


def merge_to_state_dict(
    recipe: RecipeLike, options: MergeOptions | None = None, **overrides: Any
) -> dict[str, torch.Tensor]:
    """Merge in memory and return ``{tensor name: tensor}`` in the output dtypes."""
    opts = _options(options, overrides)
    the_plan = plan(recipe, opts)
    sink = StateDictSink([OutputTensor(e.name, e.dtype, e.shape) for e in the_plan.entries])
    execute(the_plan, sink, opts.engine_options(), on_done=opts.on_done)
    return {e.name: sink.tensors[e.name] for e in the_plan.entries}


@dataclass(frozen=True)
class StepResult:
    """What happened to one merge of a multi-document recipe."""

    step: MergeStep
    out: Path
    built: bool  # False: an earlier run's output was kept (lazy)


def intermediate_dir_for(out: Path | None, recipe_path: Path, steps_have_final: bool) -> Path:
    """Where named merges go by default: OUT itself when every merge is named (mergekit-multi's
    intermediate directory), else ``OUT.intermediate`` beside OUT."""
    if out is None:
        return recipe_path.with_suffix(".intermediate")
    return out.with_name(out.name + ".intermediate") if steps_have_final else out


def merge_steps(
    recipe_path: Path,
    out: Path | None,
    options: MergeOptions,
    *,
    intermediate_dir: Path | None = None,
    lazy: bool = True,
    on_step: Callable[[MergeStep, Path, Plan | None], None] | None = None,
) -> list[StepResult]:
    """Run a multi-document recipe (mergekit-multi): each named merge into
    ``intermediate_dir/<name>``, the unnamed one into ``out``, in dependency order.

    With ``lazy`` a named merge whose output directory is complete is kept, not rebuilt; an
    interrupted one resumes from its ``.partial`` directory. ``on_step`` sees each step's plan
    before it runs (None for a kept one).
    """
    from alloykit.recipe.multi import load_steps

    probe = load_steps(recipe_path, Path("."))
    has_final = any(step.name is None for step in probe)
    if has_final and out is None:
        raise AlloyError(
            "missing OUT directory for the unnamed (final) merge",
            f"alloykit merge {recipe_path} OUT/",
        )
    directory = (intermediate_dir or intermediate_dir_for(out, recipe_path, has_final)).absolute()
    results = []
    for step in load_steps(recipe_path, directory):
        target = out if step.name is None else directory / step.name
        assert target is not None
        if lazy and step.name is not None and (target / "config.json").is_file():
            if on_step is not None:
                on_step(step, target, None)
            results.append(StepResult(step, target, built=False))
            continue
        try:
            recipe = load_recipe(step.recipe, seed=options.seed, source_file=recipe_path)
            force = options.force or (step.name is not None and not lazy)
            step_options = dataclasses.replace(options, force=force)
            check_output_dir(target.absolute(), force)
            the_plan = plan(recipe, step_options)
            if on_step is not None:
                on_step(step, target, the_plan)
            write_plan(the_plan, target, step_options)
        except AlloyError as error:
            raise type(error)(f"{step.label}: {error.message}", error.hint) from None
        results.append(StepResult(step, target, built=True))
    return results
