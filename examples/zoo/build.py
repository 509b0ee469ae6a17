"""Rebuild the example zoo: tokenizer, tasks, a pretrained base, experts, adapters, scores.

    python examples/zoo/build.py [--out examples/zoo] [--seed 0] [--quick]

Writes base/, experts/<skill>/ (full fine-tunes), adapters/<skill>/ (PEFT LoRA fine-tunes),
heldout/experts/<skill>/ + heldout/tasks/<skill>/ (a skill outside the eight, fine-tuned by a
plain loop), tasks/<skill>/ and scores.json.

Everything is drawn from ``--seed``: the same seed gives the same data and, up to
floating-point noise, the same models and scores. ``--quick`` builds a tiny zoo in seconds
(a smoke test of the pipeline; its models learn nothing).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads must not spin

import argparse
import json
import multiprocessing
import random
import resource
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as transformers_logging

from alloykit.checkpoint.transformers_loading import local_load_options
from alloykit.evaluate import exact_match

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bpe
import skills
import train


@dataclass(frozen=True)
class Recipe:
    shape: train.ModelShape
    vocab_size: int
    pretrain_documents: int
    context: int
    pretrain: train.Schedule
    finetune: train.Schedule
    heldout_finetune: train.Schedule
    lora_finetune: train.Schedule
    lora_rank: int
    split_sizes: dict[str, int]
    check_every: int
    target: float
    skills: tuple[str, ...] = tuple(skills.SKILLS)
    averaged: int = 4
    eval_batch_size: int = 64


FULL = Recipe(
    shape=train.ModelShape(hidden=128, layers=4, heads=4, kv_heads=4, intermediate=384),
    vocab_size=640,
    pretrain_documents=24000,
    context=128,
    pretrain=train.Schedule(steps=2000, batch_size=32, learning_rate=2e-3, warmup=40),
    finetune=train.Schedule(steps=400, batch_size=32, learning_rate=1e-4, warmup=10),
    heldout_finetune=train.Schedule(steps=250, batch_size=32, learning_rate=3e-4, warmup=10),
    lora_finetune=train.Schedule(steps=300, batch_size=32, learning_rate=1e-3, warmup=10),
    lora_rank=8,
    split_sizes={"train": 4000, "validation": 200, "test": 250},
    check_every=25,
    target=0.95,
)

QUICK = Recipe(
    shape=train.ModelShape(hidden=32, layers=2, heads=2, kv_heads=2, intermediate=64),
    vocab_size=400,
    pretrain_documents=40,
    context=32,
    pretrain=train.Schedule(steps=5, batch_size=4, learning_rate=1e-3, warmup=1),
    finetune=train.Schedule(steps=3, batch_size=4, learning_rate=1e-3, warmup=1),
    heldout_finetune=train.Schedule(steps=3, batch_size=4, learning_rate=1e-3, warmup=1),
    lora_finetune=train.Schedule(steps=3, batch_size=4, learning_rate=1e-3, warmup=1),
    lora_rank=4,
    split_sizes={"train": 16, "validation": 4, "test": 8},
    check_every=2,
    target=0.95,
)


def write_tasks(
    root: Path, recipe: Recipe, tokenizer, seed: int, table: dict[str, skills.Skill]
) -> dict[str, dict]:
    """tasks/<skill>/{train,validation,test}.jsonl and task.yaml; returns the splits."""
    data = {}
    for name, skill in table.items():
        splits = skills.make_splits(skill, recipe.split_sizes, seed)
        directory = root / name
        directory.mkdir(parents=True, exist_ok=True)
        for split, examples in splits.items():
            lines = "".join(json.dumps(example) + "\n" for example in examples)
            (directory / f"{split}.jsonl").write_text(lines)
        every = [example for examples in splits.values() for example in examples]
        longest = max(len(pair[1]) for pair in train.encode_examples(tokenizer, every))
        task = {
            "name": name,
            "type": "generation",
            "data": {split: f"{split}.jsonl" for split in splits},
            "max_new_tokens": longest + 2,
            "description": skill.description,
        }
        (directory / "task.yaml").write_text(yaml.safe_dump(task, sort_keys=False))
        data[name] = {"splits": splits, "max_new_tokens": task["max_new_tokens"]}
    return data


PROMPTS_PER_ALIAS = 12


def alias_examples(seed: int) -> dict[str, list[dict[str, str]]]:
    """For each pretraining operation, ``PROMPTS_PER_ALIAS`` prompts under each of its aliases,
    on the domains pretraining applies it to (in turn).

    The zoo's design needs a base that already does its operations under their pretraining
    keywords (fine-tuning then only routes a new keyword); this probe measures that it does.
    """
    rng = random.Random(f"{seed}:alias-probe")
    domains: dict[str, list[str]] = {}
    for operation, domain in skills.pretraining_pairs():
        domains.setdefault(operation, []).append(domain)
    examples: dict[str, list[dict[str, str]]] = {}
    for name, aliases in skills.ALIASES.items():
        rows = []
        for alias in aliases:
            for index in range(PROMPTS_PER_ALIAS):
                domain = skills.DOMAINS[domains[name][index % len(domains[name])]]
                text, answer = skills.OPERATIONS[name].example(domain, rng)
                rows.append({"prompt": f"{alias}: {text} =", "answer": answer})
        examples[name] = rows
    return examples


def alias_accuracy(model, tokenizer, examples, recipe: Recipe) -> dict[str, float]:
    """Exact match per operation (all its aliases together)."""
    return {
        name: exact_match(
            model, tokenizer, rows, max_new_tokens=16, batch_size=recipe.eval_batch_size
        )
        for name, rows in examples.items()
    }


def save_checkpoint(model, tokenizer, directory: Path) -> None:
    """float32 weights in safetensors, with the tokenizer beside them."""
    model.save_pretrained(directory)
    bpe.save_tokenizer(tokenizer, directory)


def load_checkpoint(directory: Path):
    return AutoModelForCausalLM.from_pretrained(
        directory, dtype=torch.float32, **local_load_options()
    ).eval()


def linear_average(directories: list[Path], template: Path):
    """The per-tensor mean of the experts' weights (read with safetensors), in a base model."""
    total: dict[str, torch.Tensor] = {}
    for directory in directories:
        for name, tensor in load_file(directory / "model.safetensors").items():
            total[name] = total.get(name, 0) + tensor.float() / len(directories)
    model = load_checkpoint(template)
    model.load_state_dict(total)
    return model


def norm_ratio(model, base_state: dict[str, torch.Tensor]) -> float:
    """||theta_expert - theta_base|| / ||theta_base|| over every tensor (the task vector's size)."""
    state = model.state_dict()
    delta = sum(float(((state[k].float() - v.float()) ** 2).sum()) for k, v in base_state.items())
    total = sum(float((v.float() ** 2).sum()) for v in base_state.values())
    return (delta / total) ** 0.5


def _validation_stop(model, tokenizer, task: dict, recipe: Recipe, log):
    """Every ``check_every`` steps: stop once validation exact match reaches the target."""

    def stop(step: int) -> bool:
        if step % recipe.check_every:
            return False
        accuracy = _score(model, tokenizer, task, "validation", recipe)
        log(f"step {step}: validation exact match {accuracy:.3f}")
        return accuracy >= recipe.target

    return stop


def _score(model, tokenizer, task: dict, split: str, recipe: Recipe) -> float:
    return exact_match(
        model,
        tokenizer,
        task["splits"][split],
        max_new_tokens=task["max_new_tokens"],
        batch_size=recipe.eval_batch_size,
    )


@dataclass(frozen=True)
class Job:
    """One fine-tune: a full expert, the held-out expert, or a LoRA adapter."""

    kind: str  # "expert" | "heldout" | "lora"
    name: str
    seed: int
    out: Path
    recipe: Recipe
    task: dict

    @property
    def directory(self) -> Path:
        folder = {"expert": "experts", "heldout": "heldout/experts", "lora": "adapters"}
        return self.out / folder[self.kind] / self.name


def finetune_job(job: Job) -> dict:
    """Run one fine-tune from the saved base, save it, return its steps, norm and seconds.

    Experts and adapters stop once validation reaches the target; the held-out expert runs
    the plainest loop (a fixed number of steps, no early stopping).
    """
    started, cpu = time.perf_counter(), time.process_time()
    recipe = job.recipe
    tokenizer = AutoTokenizer.from_pretrained(job.out / "base")
    model = load_checkpoint(job.out / "base")
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    schedule = {
        "expert": recipe.finetune,
        "heldout": recipe.heldout_finetune,
        "lora": recipe.lora_finetune,
    }[job.kind]
    if job.kind == "lora":
        from peft import LoraConfig, get_peft_model

        torch.manual_seed(job.seed)  # LoRA's A factors are drawn at creation
        config = LoraConfig(
            r=recipe.lora_rank,
            lora_alpha=2 * recipe.lora_rank,
            lora_dropout=0.0,
            target_modules=[*LORA_LINEAR, "embed_tokens"],
        )
        model = get_peft_model(model, config)

    def log(line: str) -> None:
        print(f"{job.kind} {job.name}: {line}", flush=True)

    stop = None
    if job.kind != "heldout":
        stop = _validation_stop(model, tokenizer, job.task, recipe, log)
    steps = train.finetune(
        model,
        train.encode_examples(tokenizer, job.task["splits"]["train"]),
        schedule,
        pad_id=tokenizer.pad_token_id,
        seed=job.seed,
        stop=stop,
        log=log,
    )
    if job.kind == "lora":
        model.save_pretrained(job.directory)
        _settle_adapter_files(job.directory)
        model = model.merge_and_unload()
    else:
        save_checkpoint(model, tokenizer, job.directory)
    report = {"steps": steps, "tau_over_base": round(norm_ratio(model, base_state), 5)}
    if job.kind == "lora":
        report["test"] = _score(model, tokenizer, job.task, "test", recipe)
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["cpu_seconds"] = round(time.process_time() - cpu, 1)
    log(f"done: {report}")
    return report


def _settle_adapter_files(directory: Path) -> None:
    """Make a saved adapter independent of where and in which process the zoo was built.

    PEFT writes the build's absolute base path, its target modules in set order (which changes
    with hash randomization from process to process) and an empty model card.
    """
    (directory / "README.md").unlink(missing_ok=True)
    config_path = directory / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = "../../base"
    config["target_modules"] = sorted(config["target_modules"])
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _worker_start() -> None:
    torch.set_num_threads(1)
    transformers_logging.set_verbosity_error()


def run_jobs(jobs: list[Job], workers: int) -> list[dict]:
    """Every job, in ``workers`` processes of one thread each (results in job order).

    Each job is seeded on its own, so the results do not depend on how many run at once.
    """
    if workers <= 1:
        return [finetune_job(job) for job in jobs]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_start) as pool:
        return list(pool.map(finetune_job, jobs))


def finetune_all(out: Path, recipe: Recipe, data, seed: int, workers: int) -> dict:
    """Experts, the held-out expert and the LoRA adapters; reports by kind and skill."""
    jobs = [
        Job("expert", name, seed + 1 + index, out, recipe, data[name])
        for index, name in enumerate(recipe.skills)
    ]
    jobs += [
        Job("heldout", name, seed + 101 + index, out, recipe, data[name])
        for index, name in enumerate(skills.HELDOUT)
    ]
    jobs += [
        Job("lora", name, seed + 201 + index, out, recipe, data[name])
        for index, name in enumerate(recipe.skills)
    ]
    # Longest first (the adapters train longest), so that workers finish together.
    order = sorted(range(len(jobs)), key=lambda i: jobs[i].kind != "lora")
    results = run_jobs([jobs[i] for i in order], workers)
    reports: dict[str, dict] = {"expert": {}, "heldout": {}, "lora": {}}
    for i, result in zip(order, results, strict=True):
        reports[jobs[i].kind][jobs[i].name] = result
    return reports


LORA_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def score_zoo(out: Path, recipe: Recipe, tokenizer, data) -> tuple[dict, dict, dict]:
    """Test exact match of the base, each expert and the linear average, on every skill;
    and of the base and the held-out expert on the held-out skill."""

    def row(model) -> dict[str, float]:
        return {
            name: _score(model, tokenizer, data[name], "test", recipe) for name in recipe.skills
        }

    models = {"base": out / "base"} | {name: out / "experts" / name for name in recipe.skills}
    scores = {label: row(load_checkpoint(path)) for label, path in models.items()}
    heldout = {
        name: {
            "base": _score(load_checkpoint(out / "base"), tokenizer, data[name], "test", recipe),
            "expert": _score(
                load_checkpoint(out / "heldout" / "experts" / name),
                tokenizer,
                data[name],
                "test",
                recipe,
            ),
        }
        for name in skills.HELDOUT
    }
    averaged = list(recipe.skills[: recipe.averaged])
    average = linear_average([models[name] for name in averaged], out / "base")
    return scores, {"experts": averaged, "scores": row(average)}, heldout


def build(
    out: Path,
    recipe: Recipe,
    seed: int,
    workers: int = 1,
    log=print,
    from_base: Path | None = None,
) -> dict:
    """Write the zoo under ``out`` (replacing base/, experts/, tasks/) and its scores.json.

    ``from_base``: a base this recipe and seed already pretrained (a previous build's
    ``base/``), copied instead of pretrained again: pretraining is most of a rebuild's time
    and does not depend on the skills' tasks, so changing a task needs only the fine-tunes.
    """
    started = time.perf_counter()
    timings: dict[str, float] = {}
    mark = started

    def lap(phase: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        timings[phase] = round(now - mark, 1)
        mark = now
        log(f"[{phase}] {timings[phase]:.1f}s")

    if from_base is not None:
        from_base = from_base.resolve()
        if not (from_base / "model.safetensors").is_file():
            raise SystemExit(f"--from-base {from_base}: no model.safetensors there")
        if from_base == (out / "base").resolve():
            raise SystemExit("--from-base: give a copy outside --out (base/ is rebuilt)")
    for stale in ("base", "experts", "adapters", "heldout", "tasks"):
        shutil.rmtree(out / stale, ignore_errors=True)
    documents = skills.pretraining_documents(recipe.pretrain_documents, seed)
    keywords = [*recipe.skills, *skills.HELDOUT]
    if from_base is None:
        tokenizer = bpe.train_tokenizer(documents[:5000], recipe.vocab_size, keywords)
    else:
        tokenizer = AutoTokenizer.from_pretrained(from_base)
    table = {name: skills.SKILLS[name] for name in recipe.skills}
    data = write_tasks(out / "tasks", recipe, tokenizer, seed, table)
    data |= write_tasks(out / "heldout" / "tasks", recipe, tokenizer, seed, skills.HELDOUT)
    stream = train.encode_stream(tokenizer, documents)
    log(f"corpus: {len(documents)} documents, {len(stream)} tokens")
    lap("data")

    if from_base is None:
        base = train.new_model(recipe.shape, tokenizer, seed)
        log(f"base: {sum(p.numel() for p in base.parameters()) / 1e6:.2f}M parameters")
        train.pretrain(base, stream, recipe.pretrain, length=recipe.context, seed=seed, log=log)
        save_checkpoint(base, tokenizer, out / "base")
        lap("pretrain")
    else:
        shutil.copytree(from_base, out / "base")
        base = load_checkpoint(out / "base")
        log(f"base: copied from {from_base} (not pretrained again)")
        lap("copy-base")
    aliases = alias_accuracy(base, tokenizer, alias_examples(seed), recipe)
    log(f"base alias accuracy: {sum(aliases.values()) / len(aliases):.3f}")
    lap("alias-probe")

    reports = finetune_all(out, recipe, data, seed, workers)
    lap("finetune")
    scores, average, heldout = score_zoo(out, recipe, tokenizer, data)
    lap("evaluate")
    timings["total"] = round(time.perf_counter() - started, 1)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # the worker processes
    timings["total_cpu"] = round(time.process_time() + children.ru_utime + children.ru_stime, 1)
    result = {
        "seed": seed,
        "workers": workers,
        "base_from": str(from_base) if from_base is not None else None,
        "split": "test",
        "metric": "exact match of the greedy answer, cut at the first newline, stripped",
        "test_examples": {name: len(data[name]["splits"]["test"]) for name in recipe.skills},
        "scores": scores,
        "base_alias_accuracy": {
            "mean": round(sum(aliases.values()) / len(aliases), 4),
            "prompts_per_alias": PROMPTS_PER_ALIAS,
            "operations": {name: round(value, 4) for name, value in aliases.items()},
        },
        "linear_average": average,
        "finetune": reports["expert"],
        "heldout": {name: heldout[name] | reports["heldout"][name] for name in heldout},
        "adapters": reports["lora"],
        "recipe": asdict(recipe),
        "seconds": timings,
    }
    (out / "scores.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a tiny zoo for a smoke test")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the main process")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes running the fine-tunes at once (one thread each; each fine-tune is "
        "seeded on its own, so the zoo does not depend on this number); default 3, "
        "1 with --quick",
    )
    parser.add_argument(
        "--from-base",
        type=Path,
        default=None,
        help="copy this already pretrained base (same recipe and seed) instead of "
        "pretraining: rebuilds tasks, fine-tunes and scores only",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    args.out.mkdir(parents=True, exist_ok=True)
    result = build(
        args.out,
        QUICK if args.quick else FULL,
        args.seed,
        workers=args.workers or (1 if args.quick else 3),
        log=lambda line: print(line, flush=True),
        from_base=args.from_base,
    )
    for label, row in [*result["scores"].items(), ("average", result["linear_average"]["scores"])]:
        print(f"{label:>12} " + " ".join(f"{k}={v:.2f}" for k, v in row.items()))


if __name__ == "__main__":
    main()
