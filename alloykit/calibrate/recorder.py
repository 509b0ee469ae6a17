"""What calibration records while the model reads: input Grams of linear layers, squared
gradients of the log-likelihood.

Grams come from forward pre-hooks on every ``torch.nn.Linear`` (its input ``x`` with
``y = x Wᵀ``), keyed by the weight's tensor name in the checkpoint, summed over real tokens
(the attention mask drops padding) and divided by their count at the end. Fisher diagonals
are sums of per-example squared gradients, divided by the number of examples.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from alloykit.errors import AlloyError


class ArchitectureError(AlloyError):
    """The model's layers cannot be mapped to its checkpoint's tensors."""


def linear_weights(
    model: nn.Module, stored: Iterable[str], model_name: str
) -> dict[str, nn.Linear]:
    """Every ``nn.Linear`` whose weight is stored in the checkpoint, by that tensor's name.

    A 2-D weight stored in the checkpoint but owned by another kind of module (GPT-2's
    ``Conv1D`` keeps ``[in, out]``) would get a Gram of the wrong orientation, so it is refused.
    """
    stored = set(stored)
    found: dict[str, nn.Linear] = {}
    for module_name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
            continue
        name = f"{module_name}.weight" if module_name else "weight"
        if name not in stored:
            continue
        if isinstance(module, nn.Linear):
            found[name] = module
        elif not isinstance(module, nn.Embedding):
            raise ArchitectureError(
                f"model {model_name}: tensor {name} belongs to a {type(module).__name__}, not "
                "a torch.nn.Linear: the Gram hooks cannot map this architecture",
                "calibrate with --kinds fisher, or use a model whose projections are nn.Linear",
            )
    if not found:
        raise ArchitectureError(
            f"model {model_name}: no torch.nn.Linear weight matches a tensor of its checkpoint: "
            "the Gram hooks cannot map this architecture",
            "calibrate with --kinds fisher",
        )
    return found


class GramRecorder:
    """Sums ``xᵀ x`` over the real tokens reaching each linear layer while installed."""

    def __init__(self, layers: dict[str, nn.Linear]) -> None:
        self.layers = layers
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = dict.fromkeys(layers, 0)
        self.mask: torch.Tensor | None = None
        """The attention mask ``[batch, sequence]`` (bool) of the forward pass under way."""
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> GramRecorder:
        for name, layer in self.layers.items():
            self._handles.append(layer.register_forward_pre_hook(self._hook(name)))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, name: str):
        def record(module: nn.Module, args: tuple) -> None:
            x = args[0].detach()
            if self.mask is not None and x.shape[:-1] == self.mask.shape:
                rows = x[self.mask]
            else:  # tokens routed to this layer only (e.g. one expert of a mixture)
                rows = x.reshape(-1, x.shape[-1])
            rows = rows.to(torch.float32)
            total = self.sums.get(name)
            if total is None:
                total = self.sums[name] = rows.new_zeros(rows.shape[-1], rows.shape[-1])
            total.addmm_(rows.T, rows)
            self.counts[name] += rows.shape[0]

        return record

    def averages(self) -> dict[str, torch.Tensor]:
        """Each layer's Gram averaged over the tokens it saw (layers that saw none left out).

        The sums are divided in place (a 1.1B model's Grams are 5 GB): call it once, at the end.
        """
        return {
            name: total.div_(self.counts[name]).cpu()
            for name, total in self.sums.items()
            if self.counts[name]
        }


class FisherAccumulator:
    """Sums per-example squared gradients of the parameters stored in the checkpoint."""

    def __init__(self, parameters: dict[str, nn.Parameter]) -> None:
        self.parameters = parameters
        self.sums = {
            name: torch.zeros_like(p, dtype=torch.float32) for name, p in parameters.items()
        }
        self.examples = 0

    def add(self, log_likelihood: torch.Tensor) -> None:
        """Add the squared gradient of one example's log-likelihood."""
        names = list(self.parameters)
        grads = torch.autograd.grad(log_likelihood, [self.parameters[n] for n in names])
        for name, grad in zip(names, grads, strict=True):
            self.sums[name].addcmul_(grad.float(), grad.float())
        self.examples += 1

    def averages(self) -> dict[str, torch.Tensor]:
        """Each parameter's squared gradients averaged over the examples, divided in place:
        call it once, at the end."""
        count = max(self.examples, 1)
        return {name: total.div_(count).cpu() for name, total in self.sums.items()}
