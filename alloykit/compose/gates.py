"""Router initialisation: one gate vector per expert and layer, computed before any merge work.

Modes (mergekit-moe's names):

- ``hidden`` / ``hidden_avg``: the base model runs each expert's prompts; at every layer the
  router's own input (the hidden state entering the MLP, after its norm) is averaged over the
  prompts' tokens. Positive minus negative prompts, normalised to unit length. Only the base
  model is in memory.
- ``hidden_last``: the same with only each prompt's last token.
- ``hidden_expert`` (ours): like ``hidden``, but each expert's prompts run through the base
  model with that expert's MLPs in every layer. The router of layer ``l`` in the MoE sees
  hidden states that the routed experts of layers ``< l`` produced; for a prompt of the
  expert's skill that is (once the first layers route it right) its own expert, not the
  base's MLP. Holds the base model plus one expert's MLPs.
- ``cheap_embed``: the mean token embedding of the prompts (read from the one embedding
  tensor, no forward pass), the same vector for every layer.
- ``random``: standard normal; ``uniform_random``: U(-1/sqrt(H), 1/sqrt(H)) (a fresh
  ``nn.Linear``'s range). Both drawn from a generator seeded by the recipe's seed.

An expert marked ``None`` (a Qwen shared expert without prompts) gets a zero gate in every
mode: its gate passes sigmoid(0) = 1/2 of its output for every token.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from alloykit.arch.layers import Section, section_of
from alloykit.checkpoint.source import ModelSource
from alloykit.checkpoint.transformers_loading import local_load_options
from alloykit.errors import CheckpointError, PlanError

DEGENERATE_COSINE = 0.99


@dataclass(frozen=True)
class Prompts:
    positive: tuple[str, ...]
    negative: tuple[str, ...] = ()


def gate_vectors(
    mode: str,
    base: ModelSource,
    prompts: Sequence[Prompts | None],
    *,
    mlp_modules: Sequence[str],
    hidden_size: int,
    seed: int,
    device: torch.device,
    mlp_sources: Sequence[ModelSource | None] = (),
) -> torch.Tensor:
    """Gate vectors ``[layers, len(prompts), hidden_size]`` in float32.

    ``mlp_modules`` names the base model's MLP module of each layer (``model.layers.3.mlp``):
    the hidden modes read the input of these modules. ``mlp_sources`` (``hidden_expert``)
    gives each expert's model, whose MLP tensors replace the base's while its prompts run.
    """
    layers = len(mlp_modules)
    shape = (layers, len(prompts), hidden_size)
    generator = torch.Generator().manual_seed(seed)
    if mode == "random":
        return _only_prompted(torch.randn(shape, generator=generator), prompts)
    if mode == "uniform_random":
        bound = 1.0 / math.sqrt(hidden_size)
        return _only_prompted((torch.rand(shape, generator=generator) * 2 - 1) * bound, prompts)
    if mode == "cheap_embed":
        embedding_means = _embedding_means(base, layers)

        def encode(texts: tuple[str, ...], index: int) -> torch.Tensor:
            return embedding_means(texts)
    else:
        states = _HiddenStates(base, mlp_modules, device, last_token=mode == "hidden_last")

        def encode(texts: tuple[str, ...], index: int) -> torch.Tensor:
            if mode != "hidden_expert":
                return states(texts)
            with states.mlps_of(mlp_sources[index]):
                return states(texts)

    gates = torch.zeros(shape)
    for index, item in enumerate(prompts):
        if item is None:
            continue
        vector = encode(item.positive, index)
        if item.negative:
            vector = vector - encode(item.negative, index)
        gates[:, index] = vector / vector.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    return gates


def _only_prompted(gates: torch.Tensor, prompts: Sequence[Prompts | None]) -> torch.Tensor:
    """Zero the gates of experts marked ``None`` (a shared expert keeps a constant gate)."""
    for index, item in enumerate(prompts):
        if item is None:
            gates[:, index] = 0
    return gates


def degenerate_layers(gates: torch.Tensor) -> list[tuple[int, int, int]]:
    """(layer, expert a, expert b) for pairs of non-zero gate vectors with cosine > 0.99."""
    found = []
    for layer, vectors in enumerate(gates):
        norms = vectors.norm(dim=-1)
        unit = vectors / norms.clamp_min(1e-12).unsqueeze(-1)
        cosine = unit @ unit.T
        for a in range(len(vectors)):
            for b in range(a + 1, len(vectors)):
                live = norms[a] > 0 and norms[b] > 0
                if live and cosine[a, b] > DEGENERATE_COSINE:
                    found.append((layer, a, b))
    return found


def load_tokenizer(base: ModelSource, mode: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(base.root))
    except (OSError, ValueError, TypeError) as exc:
        raise CheckpointError(
            f"model {base.reference!r}: no usable tokenizer in {base.root} ({type(exc).__name__})",
            f"gate_mode {mode} encodes the experts' prompts with the base model's tokenizer; "
            "add one, or use gate_mode: random",
        ) from None


def _encode(tokenizer, prompt: str) -> tuple[list[int], list[int]]:
    """The prompt's ids, and the positions of its own tokens (special tokens such as BOS are
    the same in every prompt, so they are left out of the averages)."""
    encoded = tokenizer(prompt, return_special_tokens_mask=True)
    positions = [i for i, special in enumerate(encoded["special_tokens_mask"]) if not special]
    if not positions:
        raise PlanError(f"prompt {prompt!r} encodes to no tokens", "use non-empty prompts")
    return encoded["input_ids"], positions


def _embedding_means(base: ModelSource, layers: int):
    tokenizer = load_tokenizer(base, "cheap_embed")
    names = [
        n
        for n, meta in base.tensors.items()
        if section_of(n) is Section.PRE and "embed" in n and len(meta.shape) == 2
    ]
    if not names:
        raise PlanError(
            f"model {base.reference!r}: no token embedding tensor found",
            "use gate_mode: hidden or random",
        )
    table = base.read(names[0]).float()

    def encode(prompts: tuple[str, ...]) -> torch.Tensor:
        rows = []
        for prompt in prompts:
            ids, positions = _encode(tokenizer, prompt)
            rows.extend(ids[i] for i in positions)
        return table[torch.tensor(rows)].mean(0).expand(layers, -1)

    return encode


class _HiddenStates:
    """Runs the base model on prompts and averages the router inputs of every layer."""

    def __init__(
        self, base: ModelSource, mlp_modules: Sequence[str], device: torch.device, last_token: bool
    ) -> None:
        from transformers import AutoModelForCausalLM

        self.tokenizer = load_tokenizer(base, "hidden")
        self.model = AutoModelForCausalLM.from_pretrained(
            str(base.root), dtype="auto", **local_load_options()
        )
        self.model.to(device).eval()
        self.device = device
        self.last_token = last_token
        self.captured: list[torch.Tensor] = []
        for name in mlp_modules:
            self.model.get_submodule(name).register_forward_pre_hook(self._capture)
        self.mlp_modules = list(mlp_modules)
        self.layers = len(mlp_modules)

    @contextmanager
    def mlps_of(self, source: ModelSource | None) -> Iterator[None]:
        """Run with ``source``'s MLP weights in place of the base's (restored afterwards)."""
        saved: list[tuple[torch.nn.Parameter, torch.Tensor]] = []
        try:
            for module_name in self.mlp_modules if source is not None else ():
                assert source is not None
                module = self.model.get_submodule(module_name)
                for name, param in module.named_parameters():
                    full = f"{module_name}.{name}"
                    if full in source.tensors:
                        saved.append((param, param.data))
                        param.data = source.read(full).to(param.device, param.dtype)
            yield
        finally:
            for param, data in saved:
                param.data = data

    def _capture(self, _module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        self.captured.append(args[0][0].float().cpu())

    @torch.no_grad()
    def __call__(self, prompts: tuple[str, ...]) -> torch.Tensor:
        total = torch.zeros(self.layers, self.model.config.hidden_size)
        count = 0
        for prompt in prompts:
            ids, positions = _encode(self.tokenizer, prompt)
            keep = positions[-1:] if self.last_token else positions
            self.captured.clear()
            self.model(torch.tensor([ids], device=self.device))
            states = torch.stack(self.captured)[:, keep]  # [layers, tokens, hidden]
            total += states.sum(1)
            count += states.shape[1]
        return total / count
