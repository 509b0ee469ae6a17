"""Command definitions. Each command parses options, calls the API, and renders."""

from __future__ import annotations

import gc
import itertools
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from alloykit.cli.calibrate import calibrate_command
from alloykit.cli.data_merges import adamerging_command, greedy_soup_command, regmean_pp_command
from alloykit.cli.documents import merge_documents
from alloykit.cli.guard import guarded, is_tty
from alloykit.cli.lora import lora_app
from alloykit.cli.mergekit_flags import (
    AllowCrimes,
    AsyncWrite,
    CloneTensors,
    CopyTokenizer,
    Cuda,
    GpuRich,
    LazyUnpickle,
    LoraMergeCache,
    LoraMergeDtype,
    LowCpuMemory,
    MergekitFlags,
    MultiGpu,
    NumThreads,
    Quiet,
    ReadToGpu,
    SafeSerialization,
    TransformersCache,
    TrustRemoteCode,
    Verbose,
    WriteModelCard,
    WriteThreads,
)
from alloykit.cli.options import (
    AllowPickle,
    CheckLoads,
    Debug,
    DryRun,
    Force,
    Fsync,
    HashInputs,
    IntermediateDir,
    Lazy,
    MemoryBudget,
    OutDir,
    OutDtype,
    OutShardSize,
    Threads,
)
from alloykit.cli.render import (
    add_budget_warnings,
    human_bytes,
    methods_markdown,
    render_method,
    render_methods,
    render_plan_and_memory,
)
from alloykit.cli.search import search

app = typer.Typer(
    name="alloykit",
    help="Build new models out of pretrained checkpoints.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(lora_app, name="lora")
app.command()(search)
app.command("calibrate")(calibrate_command)
app.command("greedy-soup")(greedy_soup_command)
app.command("adamerging")(adamerging_command)
app.command("regmean-pp")(regmean_pp_command)
console = Console(highlight=False, soft_wrap=True)


@app.command()
def merge(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML (alloykit or mergekit format).")],
    out: OutDir = None,
    dry_run: DryRun = False,
    device: Annotated[str, typer.Option(help="cpu, cuda[:N] or auto.")] = "cpu",
    threads: Threads = 2,
    dtype: Annotated[str | None, typer.Option(help="Compute dtype (default float32).")] = None,
    out_dtype: OutDtype = None,
    out_shard_size: OutShardSize = "5GB",
    memory_budget: MemoryBudget = None,
    seed: Annotated[
        int | None,
        typer.Option(
            "--seed", "--random-seed", help="Seed for random methods (default: recipe's, else 0)."
        ),
    ] = None,
    force: Force = False,
    allow_pickle: AllowPickle = False,
    drop_unmapped: Annotated[
        bool,
        typer.Option(
            "--drop-unmapped",
            help="Drop input tensors with no place in the output instead of failing.",
        ),
    ] = False,
    vocab_mismatch: Annotated[str | None, typer.Option(help="error | common_rows")] = None,
    hash_inputs: HashInputs = False,
    fsync: Fsync = True,
    check_loads: CheckLoads = True,
    intermediate_dir: IntermediateDir = None,
    lazy: Lazy = True,
    copy_tokenizer: CopyTokenizer = True,
    write_model_card: WriteModelCard = True,
    verbose: Verbose = 0,
    quiet: Quiet = False,
    cuda: Cuda = False,
    gpu_rich: GpuRich = False,
    num_threads: NumThreads = None,
    transformers_cache: TransformersCache = None,
    trust_remote_code: TrustRemoteCode = False,
    safe_serialization: SafeSerialization = True,
    multi_gpu: MultiGpu = False,
    lora_merge_cache: LoraMergeCache = None,
    lazy_unpickle: LazyUnpickle = False,
    allow_crimes: AllowCrimes = False,
    low_cpu_memory: LowCpuMemory = False,
    read_to_gpu: ReadToGpu = False,
    clone_tensors: CloneTensors = False,
    async_write: AsyncWrite = False,
    write_threads: WriteThreads = None,
    lora_merge_dtype: LoraMergeDtype = None,
    debug: Debug = False,
) -> None:
    """Merge checkpoints as a recipe says, into OUT (written atomically).

    mergekit-yaml's flags are accepted too (see docs/mergekit.md).
    """
    from alloykit.api import MergeOptions, plan, write_plan
    from alloykit.checkpoint.sink import check_output_dir
    from alloykit.engine import check_device
    from alloykit.errors import AlloyError
    from alloykit.recipe.multi import is_multi_document

    flags = MergekitFlags(
        cuda=cuda,
        gpu_rich=gpu_rich,
        safe_serialization=safe_serialization,
        trust_remote_code=trust_remote_code,
        multi_gpu=multi_gpu,
        lora_merge_cache=lora_merge_cache,
        num_threads=num_threads,
        transformers_cache=transformers_cache,
    )
    with guarded(debug), flags.hub_cache():
        options = MergeOptions(
            device=flags.device(device),
            threads=flags.threads(threads),
            dtype=dtype,
            out_dtype=out_dtype,
            out_shard_size=out_shard_size,
            seed=seed,
            force=force,
            allow_pickle=allow_pickle,
            drop_unmapped=drop_unmapped,
            vocab_mismatch=vocab_mismatch,
            memory_budget=memory_budget,
            hash_inputs=hash_inputs,
            fsync=fsync,
            copy_tokenizer=copy_tokenizer,
            write_model_card=write_model_card,
            check_loads=check_loads,
        )
        if vocab_mismatch not in (None, "error", "common_rows"):
            raise AlloyError(
                f"--vocab-mismatch: unknown value {vocab_mismatch!r}", "use error or common_rows"
            )
        check_device(options.device)
        if recipe.is_file() and is_multi_document(recipe):
            merge_documents(recipe, out, options, intermediate_dir, lazy, dry_run, quiet, console)
            return
        if out is None and not dry_run:
            raise AlloyError(
                "missing OUT directory", "alloykit merge RECIPE.yml OUT/ (or --dry-run)"
            )
        if out is not None and not dry_run:
            check_output_dir(out.absolute(), force)
        if not quiet:
            for note in flags.notes():
                console.print(f"note: {note}", highlight=False, markup=False)
        the_plan = plan(recipe, options)
        if not copy_tokenizer and the_plan.recipe.chat_template:
            the_plan.warnings.append(
                "chat_template is not written: --no-copy-tokenizer leaves the tokenizer out"
            )
        add_budget_warnings(the_plan, options.engine_options())
        if dry_run or verbose:
            render_plan_and_memory(the_plan, console, options.engine_options(), verbose=verbose > 0)
        if dry_run:
            return
        if not verbose:
            for warning in the_plan.warnings:
                console.print(f"[yellow]warning:[/] {warning}", markup=True)
        assert out is not None
        written = _with_progress(
            the_plan, options, lambda: write_plan(the_plan, out, options), quiet=quiet
        )
        if not quiet:
            size = human_bytes(the_plan.output_bytes)
            console.print(f"wrote {written} ({len(the_plan.entries)} tensors, {size})")


def _with_progress(the_plan, options, work, *, quiet: bool = False):
    """Run ``work`` under a progress bar of bytes written, tensors done and ETA (TTY only)."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    count = len(the_plan.entries)
    progress = Progress(
        TextColumn("merging"),
        BarColumn(),
        TextColumn("{task.fields[done]}/" + str(count) + " tensors"),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        disable=quiet or not is_tty(),
        console=Console(stderr=True),
        transient=False,
    )
    task = progress.add_task("merge", total=max(the_plan.output_bytes, 1), done=0)
    finished = itertools.count(1)  # next() is atomic: workers call advance concurrently

    def advance(entry) -> None:
        progress.update(task, advance=entry.nbytes, done=next(finished))

    options.on_done = advance
    with progress:
        return work()


@app.command()
def moe(
    recipe: Annotated[Path, typer.Argument(help="MoE recipe YAML (mergekit-moe format).")],
    out: OutDir = None,
    dry_run: DryRun = False,
    device: Annotated[str, typer.Option(help="cpu or cuda[:N]; also runs the prompts.")] = "cpu",
    threads: Threads = 2,
    out_dtype: OutDtype = None,
    out_shard_size: OutShardSize = "5GB",
    memory_budget: MemoryBudget = None,
    seed: Annotated[
        int | None, typer.Option(help="Seed of random gates and re-initialisation.")
    ] = None,
    force: Force = False,
    allow_pickle: AllowPickle = False,
    debug: Debug = False,
) -> None:
    """Combine dense expert models into a Mixture-of-Experts model, into OUT (atomically)."""
    from alloykit.api import MergeOptions

    options = MergeOptions(
        device=device,
        threads=threads,
        out_dtype=out_dtype,
        out_shard_size=out_shard_size,
        seed=seed,
        force=force,
        allow_pickle=allow_pickle,
        memory_budget=memory_budget,
    )
    with guarded(debug):
        _build_moe(recipe, out, options, dry_run)


@app.command()
def upcycle(
    model: Annotated[str, typer.Argument(help="Dense model: directory, file or HF cache id.")],
    out: OutDir = None,
    num_experts: Annotated[int, typer.Option(min=1, help="Routed experts per layer.")] = 8,
    experts_per_token: Annotated[int, typer.Option(min=1, help="Experts per token (top-k).")] = 2,
    architecture: Annotated[
        str | None, typer.Option(help="Output format, e.g. mixtral, qwen_moe, deepseek.")
    ] = None,
    reinit_ratio: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Drop-Upcycling share of re-drawn neurons.")
    ] = 0.0,
    num_shared_experts: Annotated[
        int | None, typer.Option(min=0, help="Shared experts (default: what the format needs).")
    ] = None,
    dry_run: DryRun = False,
    out_dtype: Annotated[str | None, typer.Option(help="Output dtype.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the gates and re-initialisation.")] = 0,
    threads: Threads = 2,
    force: Force = False,
    debug: Debug = False,
) -> None:
    """Upcycle one dense model into an MoE whose experts are copies of its MLPs."""
    from alloykit.api import MergeOptions
    from alloykit.compose import upcycle_recipe

    recipe = upcycle_recipe(
        model,
        num_experts,
        experts_per_token=experts_per_token,
        architecture=architecture,
        reinit_ratio=reinit_ratio,
        num_shared_experts=num_shared_experts,
        seed=seed,
    )
    options = MergeOptions(threads=threads, out_dtype=out_dtype, force=force)
    with guarded(debug):
        _build_moe(recipe, out, options, dry_run)


def _build_moe(recipe, out: Path | None, options, dry_run: bool) -> None:
    from alloykit.api import write_plan
    from alloykit.checkpoint.sink import check_output_dir
    from alloykit.compose import moe_plan
    from alloykit.engine import check_device
    from alloykit.errors import AlloyError

    check_device(options.device)
    if out is None and not dry_run:
        raise AlloyError("missing OUT directory", "give an output directory (or --dry-run)")
    if out is not None and not dry_run:
        check_output_dir(out.absolute(), options.force)
    the_plan = moe_plan(recipe, options)
    if dry_run:
        console.print(f"[bold]moe[/] {the_plan.layout.summary()}")
        render_plan_and_memory(the_plan, console, options.engine_options(), verbose=True)
        return
    for warning in the_plan.warnings:
        console.print(f"[yellow]warning:[/] {warning}", markup=True)
    assert out is not None
    written = _with_progress(the_plan, options, lambda: write_plan(the_plan, out, options))
    size = human_bytes(the_plan.output_bytes)
    console.print(f"wrote {written} ({the_plan.layout.summary()}; {size})")


@app.command()
def methods(
    name: Annotated[str | None, typer.Argument(help="Show one method in detail.")] = None,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print the docs page.")] = False,
    debug: Debug = False,
) -> None:
    """List merge methods with their parameters, or describe one."""
    from alloykit.errors import RecipeError
    from alloykit.methods import all_methods, get_method, method_names

    with guarded(debug):
        if markdown:
            print(methods_markdown(all_methods()), end="")
            return
        if name is None:
            render_methods(all_methods(), console)
            return
        try:
            method = get_method(name)
        except KeyError:
            import difflib

            close = difflib.get_close_matches(name, method_names(), n=1)
            hint = f"did you mean {close[0]!r}?" if close else "run `alloykit methods` for the list"
            raise RecipeError(f"unknown method {name!r}", hint) from None
        render_method(method, console)


@app.command()
def demo(
    zoo: Annotated[
        Path | None, typer.Option(help="The example zoo directory (default: examples/zoo).")
    ] = None,
    out: Annotated[Path, typer.Option(help="Where to write the merged model.")] = Path(
        "alloykit-demo-merge"
    ),
    skills: Annotated[
        str | None, typer.Option(help="Comma-separated zoo skills to merge (default: first 4).")
    ] = None,
    limit: Annotated[
        int | None, typer.Option(help="Test examples per skill (default all).")
    ] = None,
    debug: Debug = False,
) -> None:
    """Merge example-zoo experts, evaluate base, experts and merge, and print the table."""
    from alloykit.cli.demo import ZOO, run_demo

    with guarded(debug):
        chosen = [s.strip() for s in skills.split(",")] if skills else None
        run_demo(zoo or ZOO, out, chosen, limit, console)


@app.command("eval")
def eval_(
    model: Annotated[Path, typer.Argument(help="Local model directory (with its tokenizer).")],
    task: Annotated[
        list[Path] | None,
        typer.Option(help="task.yaml, a directory holding one, or a directory of JSONL splits."),
    ] = None,
    split: Annotated[str, typer.Option(help="train, validation or test.")] = "test",
    limit: Annotated[
        int | None, typer.Option(min=1, help="Evaluate N examples (perplexity: windows).")
    ] = None,
    subset_seed: Annotated[
        int | None, typer.Option(help="With --limit: a seeded random subset, not the first N.")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Rows per forward pass.")] = 64,
    device: Annotated[str, typer.Option(help="cpu or cuda[:N].")] = "cpu",
    threads: Annotated[
        int | None,
        typer.Option(min=1, help="CPU threads for torch (default: torch's; 1 suits tiny models)."),
    ] = None,
    strategy: Annotated[
        str,
        typer.Option(
            help="Exact match by 'forced' (one teacher-forced pass, generating only what it "
            "cannot decide) or 'generate' (every answer generated); the same scores."
        ),
    ] = "forced",
    lm_eval: Annotated[
        list[str] | None, typer.Option("--lm-eval", help="An lm-evaluation-harness task name.")
    ] = None,
    lm_eval_include: Annotated[
        Path | None, typer.Option(help="Directory of local lm-eval task YAML files.")
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print results as JSON.")] = False,
    debug: Debug = False,
) -> None:
    """Score MODEL on tasks: exact match, multiple-choice accuracy, perplexity."""
    from alloykit.errors import AlloyError
    from alloykit.evaluate import evaluate, load_model, load_task
    from alloykit.evaluate.answers import check_strategy
    from alloykit.evaluate.report import progress_bars, results_json, results_table

    with guarded(debug):
        if not task and not lm_eval:
            raise AlloyError("no tasks given", "add --task PATH (or --lm-eval NAME)")
        check_strategy(strategy)
        tasks = [load_task(path) for path in task or []]
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
        loaded, tokenizer = load_model(model, device)
        results = []
        if tasks:
            with progress_bars(is_tty() and not json_output) as on_progress:
                results += evaluate(
                    loaded,
                    tasks,
                    tokenizer=tokenizer,
                    split=split,
                    limit=limit,
                    subset_seed=subset_seed,
                    batch_size=batch_size,
                    on_progress=on_progress,
                    strategy=strategy,
                )
        if lm_eval:
            from alloykit.evaluate.lm_eval_bridge import run_lm_eval

            results += run_lm_eval(
                loaded,
                lm_eval,
                tokenizer=tokenizer,
                include_path=lm_eval_include,
                limit=limit,
                batch_size=batch_size,
            )
        if json_output:
            print(results_json(results, str(model)))
        else:
            console.print(results_table(results, title=f"{model} ({split} split)"))


def main() -> None:
    """The ``alloykit`` command: runs one subcommand, then the process exits."""
    try:
        app()
    finally:
        # At exit the interpreter runs a last collection over every object, torch's hundreds of
        # thousands included, though none needs collecting: 1.2 s of teardown after a merge
        # here. Frozen objects are left out of it (teardown then took 0.3 s).
        gc.freeze()
