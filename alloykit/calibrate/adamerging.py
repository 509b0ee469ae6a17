"""AdaMerging: learn task-vector coefficients by making the merged model confident.

AdaMerging: Adaptive Model Merging for Multi-task Learning, Yang et al. 2024
(arXiv:2310.02575). The merged model is ``θ = θ_base + Σ_k λ_k τ_k`` with task vectors
``τ_k = θ_k − θ_base``; the coefficients (one per task, or one per task and tensor:
"layer-wise") minimise the Shannon entropy of the merged model's predictions on unlabeled
inputs, a surrogate the paper shows tracks the loss. For a causal LM the prediction is the
next-token distribution after each prompt (the first answer token). The loss couples every
tensor, so this is a driver that holds the base and the task vectors in memory
(``(n + 1)`` × the model in float32) and writes an ordinary checkpoint, not an engine kernel.
Coefficients start at the paper's 0.3, Adam runs at the paper's learning rate 1e-3 for 500
steps by default, and coefficients are clamped to [0, 1] after each step, as in the reference
implementation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch.func import functional_call

from alloykit.calibrate.batches import padded
from alloykit.calibrate.examples import load_examples
from alloykit.checkpoint.source import open_source
from alloykit.errors import AlloyError

Granularity = Literal["task", "layer"]


@dataclass(frozen=True)
class AdaMergingSettings:
    """How coefficients are learned; ``steps`` bounds the work, ``seed`` fixes the batches."""

    granularity: Granularity = "layer"
    init: float = 0.3
    steps: int = 500
    lr: float = 1e-3
    samples: int = 64
    batch_size: int = 16
    seed: int = 0


@dataclass(frozen=True)
class AdaMergingResult:
    """The merged weights, the learned coefficients and the entropy at each step."""

    state: dict[str, torch.Tensor]
    tensor_names: tuple[str, ...]
    experts: tuple[str, ...]
    coefficients: torch.Tensor
    """``[experts, tensors]`` (layer-wise) or ``[experts, 1]`` (task-wise)."""
    entropy: tuple[float, ...]


def entropy_of_next_token(logits: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """Mean entropy of the next-token distributions at positions ``last`` of each row."""
    rows = logits[torch.arange(logits.shape[0], device=logits.device), last].float()
    log_probs = torch.log_softmax(rows, dim=-1)
    return -(log_probs.exp() * log_probs).sum(dim=-1).mean()


def merged_parameters(
    base: dict[str, torch.Tensor],
    task_vectors: dict[str, torch.Tensor],
    coefficients: torch.Tensor,
    names: Sequence[str],
) -> dict[str, torch.Tensor]:
    """``θ_base + Σ_k λ_k τ_k`` per tensor; column ``i`` of ``coefficients`` scales tensor
    ``names[i]`` (a single column scales them all)."""
    merged = {}
    for index, name in enumerate(names):
        lam = coefficients[:, min(index, coefficients.shape[1] - 1)]
        vectors = task_vectors[name]
        merged[name] = base[name] + torch.tensordot(lam, vectors, dims=1)
    return merged


def adamerging(
    base: str | Path,
    experts: Sequence[str | Path],
    data: Sequence[str | Path],
    settings: AdaMergingSettings | None = None,
    *,
    device: str = "cpu",
) -> AdaMergingResult:
    """Learn coefficients for ``experts``' task vectors over ``base`` on the prompts of
    ``data`` (tasks or JSONL files; their answers are never read)."""
    from alloykit.evaluate.runner import load_model

    settings = settings or AdaMergingSettings()
    if not experts:
        raise AlloyError("adamerging: no expert models", "give at least one --model")
    model, tokenizer = load_model(base, device)
    model.requires_grad_(False)
    target = next(model.parameters()).device
    stored = open_source(str(base)).tensors
    params = dict(model.named_parameters())
    names = tuple(n for n in params if n in stored and params[n].is_floating_point())
    base_state = {n: params[n].detach().float() for n in names}
    task_vectors = _task_vectors(experts, base_state, target)
    prompts = _prompts(data, settings)
    columns = len(names) if settings.granularity == "layer" else 1
    coefficients = torch.full(
        (len(experts), columns), settings.init, device=target, requires_grad=True
    )
    optimizer = torch.optim.Adam([coefficients], lr=settings.lr)
    generator = torch.Generator().manual_seed(settings.seed)
    trace = []
    for _ in range(settings.steps):
        chosen = torch.randperm(len(prompts), generator=generator)[: settings.batch_size]
        input_ids, mask, last = _batch(tokenizer, [prompts[i] for i in chosen], target)
        merged = merged_parameters(base_state, task_vectors, coefficients, names)
        logits = functional_call(
            model, merged, args=(), kwargs={"input_ids": input_ids, "attention_mask": mask}
        ).logits
        loss = entropy_of_next_token(logits, last)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            coefficients.clamp_(0.0, 1.0)
        trace.append(float(loss.detach()))
    with torch.no_grad():
        final = merged_parameters(base_state, task_vectors, coefficients, names)
        state = {n: final[n].to(params[n].dtype).cpu() for n in names}
    return AdaMergingResult(
        state, names, tuple(str(e) for e in experts), coefficients.detach().cpu(), tuple(trace)
    )


def card(result: AdaMergingResult, base: str | Path, settings: AdaMergingSettings) -> str:
    """A model card recording the learned coefficients."""
    head = "| tensor | " + " | ".join(Path(e).name for e in result.experts) + " |"
    lines = [
        "---",
        "library_name: transformers",
        "tags:",
        "- alloykit",
        "- merge",
        "- adamerging",
        "---",
        "",
        "# Merged model (AdaMerging)",
        "",
        f"`{base}` plus the experts' task vectors scaled by coefficients learned by entropy "
        f"minimisation (AdaMerging, arXiv:2310.02575): {settings.granularity}-wise, "
        f"{settings.steps} Adam steps at lr {settings.lr}, init {settings.init}, "
        f"{settings.samples} prompts per dataset, seed {settings.seed}. Mean next-token entropy "
        f"{result.entropy[0]:.4f} at the first step, {result.entropy[-1]:.4f} at the last."
        if result.entropy
        else f"`{base}` plus the experts' task vectors scaled by the initial coefficients.",
        "",
        "## Coefficients",
        "",
        head,
        "|" + " --- |" * (len(result.experts) + 1),
    ]
    rows = result.tensor_names if result.coefficients.shape[1] > 1 else ("(all tensors)",)
    for index, name in enumerate(rows):
        values = " | ".join(f"{v:.4f}" for v in result.coefficients[:, index].tolist())
        lines.append(f"| {name} | {values} |")
    return "\n".join(lines) + "\n"


def _task_vectors(
    experts: Sequence[str | Path], base: dict[str, torch.Tensor], device: torch.device
) -> dict[str, torch.Tensor]:
    """``[experts, *shape]`` task vectors per tensor, read one tensor at a time."""
    sources = [open_source(str(e)) for e in experts]
    vectors = {}
    for name, base_tensor in base.items():
        stack = []
        for source in sources:
            if name not in source.tensors:
                raise AlloyError(
                    f"adamerging: model {source.reference!r} has no tensor {name!r}",
                    "the experts must be fine-tunes of the base",
                )
            stack.append(source.read(name).to(device, torch.float32) - base_tensor)
        vectors[name] = torch.stack(stack)
    return vectors


def _prompts(data: Sequence[str | Path], settings: AdaMergingSettings) -> list[str]:
    prompts = []
    for source in data:
        chosen = load_examples(source, settings.samples, settings.seed)
        prompts += [ex.context or ex.target for ex in chosen.examples]
    if not prompts:
        raise AlloyError("adamerging: no prompts", "give --data with at least one example")
    return prompts


def _batch(tokenizer, prompts: list[str], device: torch.device):
    """Padded prompts and the position of each one's last token."""
    rows = [tokenizer(p)["input_ids"] for p in prompts]
    input_ids, mask = padded(rows, tokenizer.pad_token_id, device)
    last = torch.tensor([len(ids) - 1 for ids in rows], device=device)
    return input_ids, mask, last
