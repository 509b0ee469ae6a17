"""Contracts of the data-free methods that reduce interference between task vectors.

These lead FusionBench's data-free table and go beyond mergekit: Task Singular Vectors,
Iso-C / Iso-CTS, PCB, consensus (TALL masks), MagMax, CART and WUDI. Plain data, no torch; each
contract names its kernel module. :mod:`alloykit.methods.catalog` lists them with the rest.
Choices the papers leave open follow the reference implementations (FusionBench's
``fusion_bench/method/``) and are listed in ``docs/methods-vs-papers.md``.
"""

from __future__ import annotations

from alloykit.methods import working_sets
from alloykit.methods.contract import BasePolicy, Method, Param, Scope

TASK_WEIGHT = Param(
    "weight", float, Scope.PER_MODEL, 1.0, doc="multiplier of each task vector before merging"
)
AVERAGED_NOTE = (
    "Tensors that are not 2-D (norms, biases) get the mean of the task vectors, as the "
    "reference code does; every 2-D tensor, embeddings and heads included, is decomposed."
)


def _alpha(default: float, what: str) -> Param:
    return Param("alpha", float, Scope.GLOBAL, default, doc=f"scale of the merged {what}")


TSV_MERGE = Method(
    name="tsv_merge",
    summary="Keep each task's top 1/T singular directions per layer, orthogonalize, add.",
    reference="Task Singular Vectors: Reducing Task Interference in Model Merging, Gargiulo et "
    "al. 2025, arXiv:2412.00081",
    params=(TASK_WEIGHT, _alpha(1.0, "task vector")),
    base=BasePolicy.REQUIRED,
    kernel_module="alloykit.methods.tsv",
    temporaries=working_sets.task_singular_vectors,
    notes="Each of the T task vectors keeps floor(min(rows, cols) / T) singular directions (a "
    "matrix with fewer than T of them gets no update, as in the reference). The concatenated "
    "singular vectors are orthogonalized by their polar factor (P Q^T of their SVD), the "
    "reference's TSV-M. " + AVERAGED_NOTE,
)

ISOTROPIC = (
    Method(
        name="iso_c",
        summary="Sum the task vectors per layer and flatten the spectrum to its mean.",
        reference="No Task Left Behind: Isotropic Model Merging with Common and Task-Specific "
        "Subspaces, Marczak et al. 2025, arXiv:2502.04959",
        params=(TASK_WEIGHT, _alpha(1.0, "task vector")),
        base=BasePolicy.REQUIRED,
        kernel_module="alloykit.methods.isotropic",
        temporaries=working_sets.isotropic_common,
        notes="All min(rows, cols) singular values of the summed task vector, zeros included, "
        "become their mean. " + AVERAGED_NOTE,
    ),
    Method(
        name="iso_cts",
        summary="Iso-C on the common subspace plus each task's own orthogonal directions.",
        reference="No Task Left Behind: Isotropic Model Merging with Common and Task-Specific "
        "Subspaces, Marczak et al. 2025, arXiv:2502.04959",
        params=(
            TASK_WEIGHT,
            Param(
                "common_space_fraction",
                float,
                Scope.GLOBAL,
                0.8,
                minimum=0.0,
                maximum=1.0,
                doc="fraction of the singular directions taken from the summed task vector; "
                "the rest are split evenly among the tasks",
            ),
            _alpha(1.0, "task vector"),
        ),
        base=BasePolicy.REQUIRED,
        kernel_module="alloykit.methods.isotropic",
        temporaries=working_sets.isotropic_common_and_specific,
        notes="The common space keeps k - T·round((k - floor(k·fraction)) / T) directions "
        "(k = min(rows, cols)), so the task-specific rest divides evenly, as in the reference; "
        "where that rounding would exceed k, each task gets floor(k / T). Singular values of "
        "all kept directions become their mean. " + AVERAGED_NOTE,
    ),
)

PCB = Method(
    name="pcb",
    summary="Weight each task-vector entry by its intra- and inter-task balance, drop the "
    "least balanced, average the rest.",
    reference="Parameter Competition Balancing for Model Merging, Du et al. 2024, arXiv:2410.02396",
    params=(
        TASK_WEIGHT,
        Param(
            "pcb_ratio",
            float,
            Scope.GLOBAL,
            0.1,
            minimum=0.0,
            maximum=1.0,
            doc="fraction of each task vector's entries kept: those of highest balanced importance",
        ),
        Param("lambda", float, Scope.GLOBAL, 1.0, doc="scale of the merged task vector"),
    ),
    base=BasePolicy.REQUIRED,
    kernel_module="alloykit.methods.pcb",
    notes="Statistics (outlier clipping at the 0.01% quantiles, min-max normalization, the kept "
    "fraction) are per tensor; the reference computes them over the whole flattened model. "
    "A constant row normalizes to ones (the reference divides 0 by 0).",
)

CONSENSUS = Method(
    name="consensus",
    summary="Task arithmetic or TIES, keeping only entries that at least k tasks' TALL masks "
    "mark as theirs.",
    reference="Localizing Task Information for Improved Model Merging and Compression, Wang et "
    "al. 2024, arXiv:2405.07813",
    params=(
        TASK_WEIGHT,
        Param(
            "base_method",
            str,
            Scope.GLOBAL,
            "ties",
            choices=("task_arithmetic", "ties"),
            doc="the merge the consensus mask is applied to",
        ),
        Param(
            "density",
            float,
            Scope.PER_MODEL,
            0.2,
            minimum=0.0,
            maximum=1.0,
            doc="with ties: fraction of each task vector kept by magnitude",
        ),
        Param(
            "mask_lambda",
            float,
            Scope.GLOBAL,
            0.4,
            minimum=0.0,
            doc="TALL mask of task t: |tau_t| > mask_lambda * |sum(tau) - tau_t|",
        ),
        Param(
            "consensus_k",
            int,
            Scope.GLOBAL,
            2,
            minimum=0,
            doc="keep an entry where at least this many TALL masks hold it (0 keeps all)",
        ),
        Param("lambda", float, Scope.GLOBAL, 1.0, doc="scale of the merged task vector"),
    ),
    base=BasePolicy.REQUIRED,
    kernel_module="alloykit.methods.consensus",
    notes="One mask_lambda for every task (the paper picks one per task on validation data); "
    "TIES elects signs by total mass and sums the agreeing entries (the reference's disjoint "
    "sum: alloykit's ties with normalize: false). Masks are per tensor, as everything in "
    "alloykit.",
)

MAGMAX = Method(
    name="magmax",
    summary="Per entry, the task-vector value of largest magnitude, added to the base.",
    reference="MagMax: Leveraging Model Merging for Seamless Continual Learning, Marczak et al. "
    "2024, arXiv:2407.06322",
    params=(
        TASK_WEIGHT,
        Param("lambda", float, Scope.GLOBAL, 1.0, doc="scale of the merged task vector"),
    ),
    base=BasePolicy.REQUIRED,
    kernel_module="alloykit.methods.magmax",
    streams=True,
    notes="Entries of equal magnitude go to the model listed first. Every tensor is merged "
    "the same way (the reference applies it to all parameters).",
)

CART = Method(
    name="cart",
    summary="Average the models, then add the top singular directions of each model's offset "
    "from the average.",
    reference="Revisiting Weight Averaging for Model Merging, Choi et al. 2024, arXiv:2412.12153",
    params=(
        Param(
            "rank_ratio",
            float,
            Scope.GLOBAL,
            0.1,
            minimum=0.0,
            maximum=1.0,
            doc="singular directions kept of each centred task vector, as a fraction of "
            "min(rows, cols) (rounded down)",
        ),
        Param("lambda", float, Scope.GLOBAL, 1.0, doc="scale of the summed low-rank offsets"),
    ),
    base=BasePolicy.UNUSED,
    kernel_module="alloykit.methods.cart",
    temporaries=working_sets.centred_low_rank,
    min_models=2,
    notes="Centred task vectors are the models minus their mean, so no base model is used. "
    "Tensors that are not 2-D get the mean of the models (their centred vectors sum to zero). "
    "With two models the low-rank offsets cancel exactly and CART is the average.",
)

WUDI = Method(
    name="wudi",
    summary="Per layer, optimize the merged task vector to minimize its interference with "
    "each task vector (Adam, no data).",
    reference="Whoever Started the Interference Should End It: Guiding Data-Free Model Merging "
    "via Task Vectors, Cheng et al. 2025, arXiv:2503.08099",
    params=(
        TASK_WEIGHT,
        Param(
            "iterations",
            int,
            Scope.GLOBAL,
            300,
            minimum=0,
            maximum=100_000,
            doc="Adam steps per 2-D tensor (0 returns the sum of the task vectors)",
        ),
        Param(
            "learning_rate",
            float,
            Scope.GLOBAL,
            1e-5,
            minimum=0.0,
            doc="Adam's step size",
        ),
    ),
    base=BasePolicy.REQUIRED,
    kernel_module="alloykit.methods.wudi",
    temporaries=working_sets.interference_descent,
    notes="Runs on the merge's device (a GPU is advised: each step multiplies the layer by a "
    "cols x cols matrix, held once per tensor). No random draws: the result depends only on "
    "the inputs. " + AVERAGED_NOTE.replace("decomposed", "optimized"),
)

INTERFERENCE_CATALOG: tuple[Method, ...] = (
    TSV_MERGE,
    *ISOTROPIC,
    PCB,
    CONSENSUS,
    MAGMAX,
    CART,
    WUDI,
)
"""The interference-reducing data-free methods, in the order of the docs."""
