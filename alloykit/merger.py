"""Re-merging in memory: plan once, keep every input resident, merge again with new parameters.

A recipe search merges hundreds of candidates that differ only in their parameters. Through
:func:`alloykit.merge` each one re-plans, re-opens and re-reads every checkpoint and writes a
model that is then loaded again. A :class:`Merger` reads the inputs once, in the compute dtype,
into RAM or GPU memory (:class:`~alloykit.checkpoint.resident.ResidentSource`); each
:meth:`Merger.merge` plans the new parameters over those resident sources (no file is read)
and runs the same engine into tensors the caller owns
(:class:`~alloykit.checkpoint.resident.TensorSink`), such as the parameters of a live model
(:meth:`Merger.merge_into`).

It leaves process-wide state alone (``EngineOptions.tune_process`` off): the garbage
collector keeps its settings and torch its intra-op thread count, so an evaluator in the same
process runs as it would without it. Results equal :func:`alloykit.merge_to_state_dict`'s for
the same recipe and seed, computed in the same dtype, with one exception: the engine normally
runs torch on one intra-op thread, and a sum of floats that torch splits over several threads
rounds differently, so methods with whole-tensor sums (slerp's angle, Model Stock's cosine)
may differ in the last bits on large tensors unless the caller runs torch on one thread.
Task arithmetic, TIES and DARE (with its default rescaling) have no such sums: they match bit
for bit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from alloykit.api import MergeOptions, RecipeLike, _options
from alloykit.checkpoint.resident import ResidentSource, TensorSink, load_resident, storage_key
from alloykit.engine import execute
from alloykit.errors import PlanError
from alloykit.plan import Plan, PlanEntry
from alloykit.planner import make_plan, reparameterised
from alloykit.quiet_imports import collector_paused
from alloykit.recipe import load_recipe
from alloykit.recipe.model import Recipe

if TYPE_CHECKING:
    import torch


class Merger:
    """A recipe's merge, planned once over inputs kept in memory, to run again and again.

    ``Merger(recipe, device="cuda")`` keeps the inputs on the GPU. Other keyword options are
    those of :class:`~alloykit.api.MergeOptions` (``dtype`` for the compute dtype, ``seed``,
    ``threads``, ``allow_pickle``, ...); as on the command line, ``seed`` overrides the seed of
    every recipe merged. The memory held is every input tensor the plan uses, once, in the
    compute dtype (:attr:`resident_bytes`).

    A merge runs in the calling thread unless ``threads`` (or ``options``) says otherwise:
    with nothing to read, worker threads only overlap the fused kernels of two tensors, and
    their hand-offs cost more than that saves on small models or a busy machine.
    """

    def __init__(
        self,
        recipe: RecipeLike,
        *,
        device: str = "cpu",
        options: MergeOptions | None = None,
        **overrides: Any,
    ) -> None:
        self.options = _options(options, {**overrides, "device": device})
        if options is None and "threads" not in overrides:
            self.options.threads = 1  # see the class docstring
        with collector_paused():
            import torch

            from alloykit.engine.tensors import Staging, resolve_device
        self.device = resolve_device(device)
        self.plan = make_plan(_recipe(recipe), self.options.plan_options())
        self.sources: dict[str, ResidentSource] = load_resident(
            self.plan.sources,
            [[(ref.model, ref.name) for ref in e.all_inputs] for e in self.plan.entries],
            device=self.device,
            dtype=self.plan.compute_dtype.torch,
        )
        self.plan.sources = dict(self.sources)
        self._torch = torch
        # buffers, each tensor's layout of its resident inputs and the parameter tensors,
        # kept from merge to merge (the inputs never change)
        self._staging = Staging()

    @property
    def resident_bytes(self) -> int:
        """Bytes of input tensors held."""
        return sum(source.resident_bytes for source in self.sources.values())

    @property
    def entries(self) -> list[PlanEntry]:
        """The output tensors, as planned from the recipe given at construction."""
        return self.plan.entries

    def replan(self, recipe: RecipeLike | None = None) -> Plan:
        """The plan of ``recipe`` (default: the one given at construction) over the resident
        inputs; a PlanError when it is not a re-parameterisation of this Merger's plan."""
        if recipe is None:
            return self.plan
        new = _recipe(recipe)
        unknown = [ref for ref in new.model_references() if ref not in self.sources]
        if unknown:
            raise PlanError(
                f"recipe names model {unknown[0]!r}, which this Merger did not load",
                "a Merger re-merges the same models with new parameters; make a new Merger "
                "for other models",
            )
        if new.merge_method != self.plan.method.name:
            raise PlanError(
                f"recipe uses merge_method {new.merge_method!r}, this Merger "
                f"{self.plan.method.name!r}",
                "a Merger re-merges with new parameters only; make a new Merger for another method",
            )
        options = self.options.plan_options()
        plan = reparameterised(self.plan, new, options)
        if plan is None:  # not only parameter values differ: plan it, then compare
            sources = {ref: self.sources[ref] for ref in new.model_references()}
            plan = make_plan(new, options, sources=sources)
            _check_same_tensors(self.plan, plan)
        return plan

    def merge(self, recipe: RecipeLike | None = None) -> dict[str, torch.Tensor]:
        """Merge with ``recipe``'s parameters (default: the construction recipe's); return
        ``{tensor name: tensor}`` in the output dtypes, on this Merger's device."""
        plan = self.replan(recipe)
        torch = self._torch
        targets = {
            e.name: torch.empty(e.shape, dtype=e.dtype.torch, device=self.device)
            for e in plan.entries
        }
        self._run(plan, TensorSink(targets))
        return targets

    def merge_into(self, module: torch.nn.Module, recipe: RecipeLike | None = None) -> None:
        """Merge with ``recipe``'s parameters straight into ``module``'s parameters and
        buffers, matched by name (cast to each one's dtype and device as it is written).

        Every merged tensor must have a parameter or persistent buffer of its name and shape,
        and every one of those must be written: by name, or through a tensor it is tied to
        (an output head sharing the embeddings' memory). Nothing else is copied whole.
        """
        plan = self.replan(recipe)
        targets = module.state_dict(keep_vars=True)
        _check_module(plan, targets)
        self._run(plan, TensorSink({e.name: targets[e.name] for e in plan.entries}))

    def _run(self, plan: Plan, sink: TensorSink) -> None:
        options = self.options.engine_options()
        options.tune_process = False
        options.raw_path = False  # no input is in a file any more
        execute(plan, sink, options, on_done=self.options.on_done, staging=self._staging)


def _recipe(recipe: RecipeLike) -> Recipe:
    return recipe if isinstance(recipe, Recipe) else load_recipe(recipe)


def _check_same_tensors(planned: Plan, new: Plan) -> None:
    """Refuse a plan whose output tensors or inputs differ from the resident plan's."""
    before = {e.name: e for e in planned.entries}
    after = {e.name: e for e in new.entries}
    for name in sorted(before.keys() ^ after.keys()):
        side = "does not make" if name in before else "makes"
        raise PlanError(
            f"recipe {side} tensor {name!r}, unlike the recipe this Merger was made with",
            "a Merger re-merges the same tensors with new parameters; make a new Merger",
        )
    for name, entry in after.items():
        old = before[name]
        same = (entry.shape, entry.dtype, entry.inputs, entry.base, entry.common_rows) == (
            old.shape,
            old.dtype,
            old.inputs,
            old.base,
            old.common_rows,
        )
        same = same and entry.statistics == old.statistics
        if not same:
            raise PlanError(
                f"tensor {name!r}: recipe merges it from other inputs, dtype or shape than "
                "the recipe this Merger was made with",
                "a Merger re-merges the same models and tensors with new parameters; make a "
                "new Merger",
            )


def _check_module(plan: Plan, targets: dict[str, torch.Tensor]) -> None:
    """Every merged tensor has a place of its shape in the module, and every tensor of the
    module is written (by name or through a tied tensor)."""
    for entry in plan.entries:
        target = targets.get(entry.name)
        if target is None:
            raise PlanError(
                f"merged tensor {entry.name!r} has no parameter or buffer of that name in the "
                "module",
                "build the module from the same architecture and config as the recipe's models",
            )
        if tuple(target.shape) != tuple(entry.shape):
            raise PlanError(
                f"merged tensor {entry.name!r} has shape {list(entry.shape)}, the module's "
                f"{list(target.shape)}",
                "build the module from the same config as the recipe's models",
            )
    written = {storage_key(targets[e.name]) for e in plan.entries}
    merged = {e.name for e in plan.entries}
    for name, target in targets.items():
        if name not in merged and storage_key(target) not in written:
            raise PlanError(
                f"the module's tensor {name!r} is not made by the merge",
                "build the module from the same architecture as the recipe's models",
            )
