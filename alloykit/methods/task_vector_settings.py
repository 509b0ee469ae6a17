"""The eight task-vector methods as settings of one generalized merge.

Task arithmetic, TIES, DARE, Model Breadcrumbs and DELLA differ only in how each task vector
is sparsified, whether signs are elected, and their defaults: a :class:`TaskVectorMethod`
states that, and every method's parameters and notes are derived from it here, without
torch. :mod:`alloykit.methods.task_vectors` builds the merge from the same settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from alloykit.methods.contract import BasePolicy, Method, Param, Scope
from alloykit.methods.step_choices import SIGN_RULE_ALIASES, RescaleMode, SignRule, Sparsification

KERNEL_MODULE = "alloykit.methods.task_vectors"
RAW_MERGE = "alloykit.methods.stored:task_vectors_of_stored"
RAW_THINNING = (None, Sparsification.RANDOM)
"""The thinnings the raw path runs (no magnitude cut-offs, no DELLA ranks: those need the
torch path's counting passes)."""


@dataclass(frozen=True)
class TaskVectorOptions:
    """What a recipe's global parameters make of a method's settings for one merge."""

    sparsification: Sparsification | None
    rescale_mode: RescaleMode | None  # None: survivors are not scaled back up
    sign_rule: SignRule | None  # None: no sign election
    normalize: bool
    scale: float
    seed: int


@dataclass(frozen=True)
class TaskVectorMethod:
    """The settings that make one task-vector method out of the generalized merge
    (:class:`~alloykit.methods.task_vectors.TaskVectorMerge`)."""

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

    def options(self, params: Mapping[str, Any]) -> TaskVectorOptions:
        """This method's settings applied to a recipe's parameters: what both the torch path
        and the torch-free raw path merge with."""
        rule = params.get("consensus_method") if self.sign_election else None
        sparse = self.sparsification is not None
        return TaskVectorOptions(
            sparsification=self.sparsification,
            rescale_mode=RescaleMode(params["rescale_mode"])
            if sparse and params["rescale"]
            else None,
            sign_rule=None if rule is None else SIGN_RULE_ALIASES[rule],
            normalize=params["normalize"],
            scale=params["lambda"],
            seed=params.get("seed", 0),
        )

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

    def contract(self) -> Method:
        """This method's contract, implemented by :mod:`alloykit.methods.task_vectors`."""
        return Method(
            name=self.name,
            summary=self.summary,
            reference=self.reference,
            params=self.params(),
            base=BasePolicy.REQUIRED,
            kernel_module=KERNEL_MODULE,
            random=self.random,
            streams=True,
            raw_merge=RAW_MERGE if self.sparsification in RAW_THINNING else None,
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
