"""Task-vector merging: one generalized function behind eight registered methods.

A task vector is a fine-tuned model minus its base (Editing Models with Task Arithmetic,
Ilharco et al. 2022, arXiv:2212.04089). Every method here sparsifies each task vector
(or not), weights it, optionally keeps only the entries that agree with an elected sign,
sums, optionally normalizes, scales by ``lambda`` and adds the result back to the base.
Methods differ only in their :class:`TaskVectorMethod` settings.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from alloykit import native
from alloykit.methods.linear import broadcast_weights
from alloykit.methods.registry import BasePolicy, Param, Scope, register_streaming
from alloykit.methods.steps import (
    KEPT_BITS_BYTES,
    SIGN_RULE_ALIASES,
    RescaleMode,
    SignRule,
    Sparsification,
    Sparsifier,
    disjoint_sum,
    measure_deltas,
    model_seed,
    per_model,
    sign_consensus,
    survivor_bytes,
    weighted_sum,
)
from alloykit.methods.streaming import Chunk, Observer, StreamingMerge


class TaskVectorMerge(StreamingMerge):
    """``base + scale * combine(weight_i * sparsify(tensors_i - base))`` over row chunks.

    ``combine`` is the sign-consensus disjoint sum when ``sign_rule`` is set (TIES), a plain
    sum otherwise; signs are elected on the weighted task vectors and ``normalize`` divides by
    the (agreeing) weights. Whole-tensor statistics (magnitude cut-offs, L1 norms) are passes
    over the chunks; model ``i``'s random draws come from its own generator
    (:func:`~alloykit.methods.steps.model_seed`).
    """

    reads_stored = True  # the fused kernels read bfloat16; the torch path widens first

    def __init__(
        self,
        shape: tuple[int, ...],
        dtype: torch.dtype,
        *,
        weight: torch.Tensor,
        sparsification: Sparsification | None = None,
        density: torch.Tensor | None = None,
        gamma: torch.Tensor | None = None,
        epsilon: torch.Tensor | None = None,
        rescale_mode: RescaleMode | None = None,
        sign_rule: SignRule | None = None,
        normalize: bool = False,
        scale: float = 1.0,
        seed: int = 0,
    ) -> None:
        self.weight = weight
        self.dtype = dtype
        self.sign_rule = sign_rule
        self.normalize = normalize
        self.scale = scale
        numel = 1
        for d in shape:
            numel *= d
        self.sparsifiers: list[Sparsifier] = []
        if sparsification is not None and density is not None:
            n = weight.numel()
            densities = per_model(density)
            gammas = per_model(gamma) if gamma is not None else [0.0] * n
            epsilons = per_model(epsilon) if epsilon is not None else [0.0] * n
            bits = n * survivor_bytes(numel) <= KEPT_BITS_BYTES  # for all models, or none
            self.sparsifiers = [
                Sparsifier(
                    sparsification,
                    numel,
                    dtype,
                    density=densities[i],
                    gamma=gammas[i],
                    epsilon=epsilons[i],
                    rescale_mode=rescale_mode,
                    seed=model_seed(seed, i),
                    record_survivors=bits,
                )
                for i in range(n)
            ]

    def passes(self) -> Iterator[Observer]:
        levels = max((s.levels for s in self.sparsifiers), default=0)
        for _ in range(levels):
            yield self._count
            for sparsifier in self.sparsifiers:
                sparsifier.settle()
        measured = [s for s in self.sparsifiers if s.needs_l1]
        if measured:
            self._start_scan()
            yield self._measure
            for sparsifier in measured:
                sparsifier.settle_l1()
        self._start_scan()

    def _fused(self, chunk: Chunk) -> bool:
        """Whether this chunk goes through the fused kernels (:mod:`alloykit.native`)."""
        usable = native.usable_stored if chunk.stored else native.usable
        return (
            usable(chunk.tensors, chunk.base)
            and chunk.tensors.shape[0] <= native.MAX_MODELS
            and self.weight.dim() == 1
        )

    def merge(self, chunk: Chunk) -> torch.Tensor:
        assert chunk.base is not None
        if self._fused(chunk):
            return self._merge_fused(chunk)
        chunk = chunk.widened(self.dtype)
        assert chunk.base is not None
        deltas = chunk.tensors.sub_(chunk.base)
        for delta, sparsifier in zip(deltas, self.sparsifiers, strict=False):
            sparsifier.apply(delta)
        weighted = deltas.mul_(broadcast_weights(self.weight, deltas))
        if self.sign_rule is None:
            merged = weighted_sum(weighted, self.weight, self.normalize)
        else:
            agree = sign_consensus(weighted, self.sign_rule)
            merged = disjoint_sum(weighted, self.weight, agree, self.normalize)
        if self.scale != 1:
            merged = merged * self.scale
        return merged.add_(chunk.base)

    def _merge_fused(self, chunk: Chunk) -> torch.Tensor:
        assert chunk.base is not None
        x, base = chunk.tensors, chunk.base
        weights = self.weight.tolist()
        if self.sparsifiers:
            keeps = [
                sparsifier.native_keep(x[m], base, weights[m], m, chunk.offset)
                for m, sparsifier in enumerate(self.sparsifiers)
            ]
        else:
            keeps = [native.Keep(mode=native.KeepMode.ALL, weight=w) for w in weights]
        divide_by = 1.0
        if self.sign_rule is None and self.normalize:
            total = self.weight.sum()
            divide_by = 1.0 if abs(float(total)) < 1e-8 else float(total)
        sign = {
            None: native.SignVote.NONE,
            SignRule.TOTAL: native.SignVote.TOTAL,
            SignRule.FREQUENCY: native.SignVote.FREQUENCY,
        }[self.sign_rule]
        # each value of x[0] is read before it is overwritten; stored inputs are bfloat16
        out = torch.empty_like(base, dtype=torch.float32) if chunk.stored else x[0]
        native.task_vectors(
            x, base, keeps, sign=sign, normalize=self.normalize, divide_by=divide_by,
            scale=self.scale, out=out,
        )  # fmt: skip
        for sparsifier, keep in zip(self.sparsifiers, keeps, strict=False):
            sparsifier.native_done(keep)
        return out

    def _count(self, chunk: Chunk) -> None:
        assert chunk.base is not None
        if self._fused(chunk):
            for x, sparsifier in zip(chunk.tensors, self.sparsifiers, strict=False):
                if sparsifier.levels:
                    sparsifier.count_deltas(x, chunk.base)
            return
        chunk = chunk.widened(self.dtype)
        assert chunk.base is not None
        deltas = chunk.tensors.sub_(chunk.base)
        for delta, sparsifier in zip(deltas, self.sparsifiers, strict=False):
            if sparsifier.levels:
                sparsifier.count(delta)

    def _measure(self, chunk: Chunk) -> None:
        assert chunk.base is not None
        if self._fused(chunk):
            measured = {m: s for m, s in enumerate(self.sparsifiers) if s.needs_l1}
            measure_deltas(measured, chunk.tensors, chunk.base, chunk.offset)
            return
        chunk = chunk.widened(self.dtype)
        assert chunk.base is not None
        deltas = chunk.tensors.sub_(chunk.base)
        for delta, sparsifier in zip(deltas, self.sparsifiers, strict=False):
            if sparsifier.needs_l1:
                sparsifier.measure(delta)

    def _start_scan(self) -> None:
        for sparsifier in self.sparsifiers:
            sparsifier.start_scan()


@dataclass(frozen=True)
class TaskVectorMethod:
    """The settings that make one task-vector method out of :class:`TaskVectorMerge`."""

    name: str
    summary: str
    reference: str
    sparsification: Sparsification | None
    sign_election: bool
    normalize: bool
    rescale: bool
    rescale_mode: RescaleMode = RescaleMode.L1
    notes: str = ""

    @property
    def random(self) -> bool:
        return self.sparsification in (Sparsification.RANDOM, Sparsification.DELLA)

    def params(self) -> tuple[Param, ...]:
        sparse = self.sparsification is not None
        params = [
            Param("weight", float, Scope.PER_MODEL, 1.0, doc="multiplier of each task vector"),
            Param(
                "density",
                float,
                Scope.PER_MODEL,
                1.0,
                minimum=0.0,
                maximum=1.0,
                doc="fraction of each task vector kept"
                if sparse
                else "accepted for mergekit compatibility; task_arithmetic does not sparsify",
            ),
        ]
        if self.sparsification is Sparsification.BREADCRUMBS:
            params.append(
                Param(
                    "gamma",
                    float,
                    Scope.PER_MODEL,
                    0.01,
                    minimum=0.0,
                    maximum=1.0,
                    doc="fraction of largest-magnitude entries dropped as outliers",
                )
            )
        if self.sparsification is Sparsification.DELLA:
            params.append(
                Param(
                    "epsilon",
                    float,
                    Scope.PER_MODEL,
                    0.15,
                    minimum=0.0,
                    maximum=0.5,
                    doc="keep probabilities span density ± epsilon from smallest to largest "
                    "magnitude in each row; needs 0 < density - epsilon, density + epsilon < 1",
                )
            )
        if self.sign_election:
            params.append(
                Param(
                    "consensus_method",
                    str,
                    Scope.GLOBAL,
                    SignRule.TOTAL.value,
                    choices=tuple(SIGN_RULE_ALIASES),
                    doc="sign election: total = sign of the summed weighted task vectors, "
                    "frequency = sign held by more models (sum / count are mergekit's names)",
                )
            )
        params += [
            Param(
                "normalize",
                bool,
                Scope.GLOBAL,
                self.normalize,
                doc="divide the sum by the weights of the contributing (sign-agreeing) models",
            ),
            Param(
                "rescale",
                bool,
                Scope.GLOBAL,
                self.rescale,
                doc="scale the entries kept by sparsification back up (see rescale_mode)"
                if sparse
                else "accepted for mergekit compatibility; task_arithmetic does not sparsify",
            ),
        ]
        if sparse:
            params.append(
                Param(
                    "rescale_mode",
                    str,
                    Scope.GLOBAL,
                    self.rescale_mode.value,
                    choices=tuple(m.value for m in RescaleMode),
                    doc="keep_rate = divide each kept entry by its keep probability (the "
                    "papers); l1 = restore each task vector's L1 norm (mergekit 0.1.5)",
                )
            )
        params += [
            Param("lambda", float, Scope.GLOBAL, 1.0, doc="scale of the merged task vector"),
            Param("int8_mask", bool, Scope.GLOBAL, False, doc="accepted for mergekit; no effect"),
        ]
        return tuple(params)

    def streaming(
        self, shape: tuple[int, ...], dtype: torch.dtype, **params: Any
    ) -> TaskVectorMerge:
        """This method's merge of one tensor (see :class:`TaskVectorMerge`)."""
        rule = params.get("consensus_method") if self.sign_election else None
        sparse = self.sparsification is not None
        mode = RescaleMode(params["rescale_mode"]) if sparse and params["rescale"] else None
        return TaskVectorMerge(
            shape,
            dtype,
            weight=params["weight"],
            sparsification=self.sparsification,
            density=params.get("density"),
            gamma=params.get("gamma"),
            epsilon=params.get("epsilon"),
            rescale_mode=mode,
            sign_rule=None if rule is None else SIGN_RULE_ALIASES[rule],
            normalize=params["normalize"],
            scale=params["lambda"],
            seed=params.get("seed", 0),
        )

    def register(self) -> None:
        register_streaming(
            self.name,
            self.streaming,
            summary=self.summary,
            reference=self.reference,
            params=self.params(),
            base=BasePolicy.REQUIRED,
            random=self.random,
            notes=self.all_notes(),
        )

    def all_notes(self) -> str:
        """This method's notes plus the differences from mergekit it shares with others."""
        notes = [self.notes] if self.notes else []
        if self.sign_election:
            notes.append(SIGN_NOTE)
        if self.random:
            notes.append(RANDOM_NOTE)
        notes.append(WEIGHT_NOTE)
        return " ".join(notes)


TASK_ARITHMETIC = "Editing Models with Task Arithmetic, Ilharco et al. 2022, arXiv:2212.04089"
TIES = (
    "TIES-Merging: Resolving Interference When Merging Models, Yadav et al. 2023, arXiv:2306.01708"
)
DARE = (
    "Language Models are Super Mario: Absorbing Abilities from Homologous Models as a Free "
    "Lunch, Yu et al. 2023, arXiv:2311.03099"
)
BREADCRUMBS = (
    "Model Breadcrumbs: Scaling Multi-Task Model Merging with Sparse Masks, Davari & "
    "Belilovsky 2023, arXiv:2312.06795"
)
DELLA = (
    "DELLA-Merging: Reducing Interference in Model Merging through Magnitude-Based Sampling, "
    "Deep et al. 2024, arXiv:2406.11617"
)
KEEP_RATE_NOTE = (
    "rescale_mode defaults to keep_rate (divide kept entries by their keep probability, as in "
    "the paper); mergekit 0.1.5 instead restores each task vector's L1 norm: set "
    "rescale_mode: l1 to reproduce it."
)
TIE_NOTE = (
    "Entries of equal magnitude at the cut-off are kept in position order, so exactly the "
    "stated count is kept on every device (mergekit's choice among ties is unspecified)."
)
SIGN_NOTE = (
    "consensus_method is ours: mergekit 0.1.5 always elects by total (its 'sum'), with no "
    "parameter."
)
RANDOM_NOTE = (
    "Each model's random draws come from its own generator, seeded from the tensor's seed and "
    "drawn on CPU in flat order, so results are reproducible on any device, thread count and "
    "chunking, but never bitwise equal to mergekit's (global RNG)."
)
WEIGHT_NOTE = "weight defaults to 1 (mergekit requires it)."

METHODS = (
    TaskVectorMethod(
        "task_arithmetic",
        "Add the weighted sum of task vectors (model minus base) to the base.",
        TASK_ARITHMETIC,
        sparsification=None,
        sign_election=False,
        normalize=False,
        rescale=False,
    ),
    TaskVectorMethod(
        "ties",
        "Trim task vectors to their largest entries, elect signs, average the agreeing ones.",
        TIES,
        sparsification=Sparsification.MAGNITUDE,
        sign_election=True,
        normalize=True,
        rescale=False,
        notes=TIE_NOTE,
    ),
    TaskVectorMethod(
        "dare_linear",
        "Randomly drop task-vector entries, rescale the rest, add their weighted sum.",
        DARE,
        sparsification=Sparsification.RANDOM,
        sign_election=False,
        normalize=False,
        rescale=True,
        rescale_mode=RescaleMode.KEEP_RATE,
        notes=KEEP_RATE_NOTE,
    ),
    TaskVectorMethod(
        "dare_ties",
        "Randomly drop and rescale task-vector entries, then TIES sign election.",
        DARE,
        sparsification=Sparsification.RANDOM,
        sign_election=True,
        normalize=False,
        rescale=True,
        rescale_mode=RescaleMode.KEEP_RATE,
        notes=KEEP_RATE_NOTE,
    ),
    TaskVectorMethod(
        "breadcrumbs",
        "Drop task-vector outliers and small entries, add the weighted sum of the rest.",
        BREADCRUMBS,
        sparsification=Sparsification.BREADCRUMBS,
        sign_election=False,
        normalize=False,
        rescale=False,
        notes=TIE_NOTE,
    ),
    TaskVectorMethod(
        "breadcrumbs_ties",
        "Model Breadcrumbs sparsification followed by TIES sign election.",
        BREADCRUMBS,
        sparsification=Sparsification.BREADCRUMBS,
        sign_election=True,
        normalize=False,
        rescale=False,
        notes=TIE_NOTE,
    ),
    TaskVectorMethod(
        "della",
        "Drop task-vector entries with magnitude-ranked probabilities, rescale, elect signs.",
        DELLA,
        sparsification=Sparsification.DELLA,
        sign_election=True,
        normalize=True,
        rescale=True,
        rescale_mode=RescaleMode.KEEP_RATE,
        notes=KEEP_RATE_NOTE
        + " Ranks run along the last dimension of each tensor (mergekit: dimension 1, which "
        "differs only for tensors of three or more dimensions).",
    ),
    TaskVectorMethod(
        "della_linear",
        "Drop task-vector entries with magnitude-ranked probabilities, rescale, add the sum.",
        DELLA,
        sparsification=Sparsification.DELLA,
        sign_election=False,
        normalize=False,
        rescale=True,
        rescale_mode=RescaleMode.KEEP_RATE,
        notes=KEEP_RATE_NOTE
        + " Ranks run along the last dimension of each tensor (mergekit: dimension 1, which "
        "differs only for tensors of three or more dimensions).",
    ),
)

for _method in METHODS:
    _method.register()
