"""The contract of every merge method, as data: what recipes may ask of each method.

Recipe validation, ``alloykit methods`` and the docs table read these without importing
torch; each contract names the kernel module that implements it (imported on first use, see
:mod:`alloykit.methods.contract`). The task-vector family's contracts are derived from its
settings (:mod:`alloykit.methods.task_vector_settings`).
"""

from __future__ import annotations

from alloykit.methods import task_vector_settings
from alloykit.methods.contract import (
    BasePolicy,
    Method,
    Param,
    Scope,
    Statistic,
    StatisticShape,
)
from alloykit.methods.interference_catalog import INTERFERENCE_CATALOG

SHOEMAKE = "Animating Rotation with Quaternion Curves, Shoemake 1985 (doi:10.1145/325165.325242)"

LINEAR = (
    Method(
        name="linear",
        summary="Weighted average of the models' weights (model soup).",
        reference="Model soups, Wortsman et al. 2022, arXiv:2203.05482",
        params=(
            Param("weight", float, Scope.PER_MODEL, 1.0, doc="weight of each model"),
            Param("normalize", bool, Scope.GLOBAL, True, doc="divide by the sum of the weights"),
        ),
        base=BasePolicy.UNUSED,
        kernel_module="alloykit.methods.linear",
        streams=True,
        raw_merge="alloykit.methods.stored:linear_of_stored",
        notes="With normalize, weights summing to ~0 (|sum| <= 1e-8) leave the sum undivided "
        "(mergekit divides anyway, giving inf or NaN). weight defaults to 1 (mergekit requires "
        "it).",
    ),
    Method(
        name="passthrough",
        summary="Copy one model's tensor unchanged (optionally scaled); used for layer stacking.",
        reference="mergekit passthrough, arXiv:2403.13257",
        params=(
            Param("scale", float, Scope.PER_MODEL, 1.0, doc="multiplier applied to the tensor"),
        ),
        base=BasePolicy.UNUSED,
        kernel_module="alloykit.methods.linear",
        max_models=1,
        streams=True,
    ),
)

NEARSWAP = Method(
    name="nearswap",
    summary="Swap in the other model's parameters where they are within t of the base's.",
    reference="NearSwap, QuartetAnemoi-70B-t0.0001 model card, alchemonaut 2024 "
    "(https://huggingface.co/alchemonaut/QuartetAnemoi-70B-t0.0001)",
    params=(
        Param(
            "t",
            float,
            Scope.GLOBAL,
            minimum=0.0,
            doc="distance below which a parameter is fully swapped",
        ),
    ),
    base=BasePolicy.REQUIRED,
    kernel_module="alloykit.methods.nearswap",
    max_models=1,
    streams=True,
    notes="Distances below 1e-6 count as 1e-6, as in mergekit. t must be >= 0 (mergekit "
    "also accepts negative t, which leaves the base unchanged).",
)

KARCHER = Method(
    name="karcher",
    summary="Weighted Karcher (Fréchet) mean of the models on the sphere, with mean norm.",
    reference="Riemannian Center of Mass and Mollifier Smoothing, Karcher 1977 "
    "(doi:10.1002/cpa.3160300502); mergekit cites arXiv:2603.04972",
    params=(
        Param("weight", float, Scope.PER_MODEL, 1.0, minimum=0.0, doc="weight of each model"),
        Param("max_iter", int, Scope.GLOBAL, 10, minimum=1, doc="maximum iterations"),
        Param("tol", float, Scope.GLOBAL, 1e-5, minimum=0.0, doc="convergence tolerance"),
    ),
    base=BasePolicy.UNUSED,
    kernel_module="alloykit.methods.karcher",
    notes="Honours per-model weight (mergekit 0.1.5 takes no weight: every model counts "
    "equally, which is our default of 1).",
)

SPHERICAL = (
    Method(
        name="slerp",
        summary="Spherical interpolation between the base and one other model.",
        reference=SHOEMAKE,
        params=(
            Param(
                "t",
                float,
                Scope.GLOBAL,
                doc="position on the arc: 0 = base, 1 = the other model (outside [0, 1] "
                "extrapolates)",
            ),
        ),
        base=BasePolicy.REQUIRED,
        kernel_module="alloykit.methods.spherical",
        min_models=1,
        max_models=1,
        streams=True,
        notes="Each tensor is one flat vector; pairs with |cos| > 0.9995 interpolate linearly.",
    ),
    Method(
        name="nuslerp",
        summary="Slerp between two models (or their task vectors) with weights instead of t.",
        reference=f"{SHOEMAKE}; mergekit nuslerp",
        params=(
            Param("weight", float, Scope.PER_MODEL, 1.0, doc="relative weight; t = w1 / (w0 + w1)"),
            Param(
                "nuslerp_flatten",
                bool,
                Scope.GLOBAL,
                True,
                doc="treat each tensor as one vector (else one vector per row)",
            ),
            Param(
                "nuslerp_row_wise",
                bool,
                Scope.GLOBAL,
                False,
                doc="without flatten: vectors run along the first dimension instead of the last",
            ),
        ),
        base=BasePolicy.OPTIONAL,
        kernel_module="alloykit.methods.spherical",
        min_models=2,
        max_models=2,
        notes="With a base model the task vectors are slerped and added to the base. As in "
        "mergekit, nuslerp_row_wise: true makes the vectors run along dimension 0 (the columns "
        "of a weight matrix), whatever the name suggests. Weights summing to ~0 give t = 0.5. "
        "weight defaults to 1 (mergekit requires it).",
    ),
    Method(
        name="multislerp",
        summary="Weighted spherical barycentre of any number of models (or task vectors).",
        reference="Multi-SLERP, Goddard 2025, "
        "https://goddard.blog/posts/multislerp-wow-what-a-cool-idea; after Spherical Averages "
        "and Applications to Spherical Splines and Interpolation, Buss & Fillmore 2001 "
        "(doi:10.1145/502122.502124)",
        params=(
            Param("weight", float, Scope.PER_MODEL, 1.0, doc="weight of each model"),
            Param("normalize_weights", bool, Scope.GLOBAL, True, doc="divide weights by their sum"),
            Param("eps", float, Scope.GLOBAL, 1e-8, minimum=0.0, doc="numerical floor for norms"),
        ),
        base=BasePolicy.OPTIONAL,
        kernel_module="alloykit.methods.spherical",
        notes="One-step tangent-space approximation (not the iterated Karcher mean). Norms are "
        "the weighted mean of the inputs' norms. A single model is returned unchanged; two "
        "antipodal models fall back to linear interpolation; more with a zero mean are an "
        "error. weight defaults to 1 (mergekit requires it).",
    ),
)

MODEL_STOCK = Method(
    name="model_stock",
    summary="Interpolate base → mean of models by a ratio set by the updates' mean cosine.",
    reference="Model Stock: All We Need Is Just a Few Fine-Tuned Models, Jang et al. 2024, "
    "arXiv:2403.19522",
    params=(
        Param(
            "filter_wise",
            bool,
            Scope.GLOBAL,
            False,
            doc="one ratio per row (vector along the last dimension) instead of per tensor",
        ),
    ),
    base=BasePolicy.REQUIRED,
    kernel_module="alloykit.methods.model_stock",
    min_models=2,
    streams=True,
    raw_merge="alloykit.methods.stored:model_stock_of_stored",
    notes="Where 1 + (k − 1)·cosθ is ~0 (|x| < 1e-6) the base is kept (t = 0), as in mergekit.",
)

SCE = Method(
    name="sce",
    summary="Keep high-variance entries, weight models by task-vector energy, erase minority "
    "signs.",
    reference="FuseChat: Knowledge Fusion of Chat Models, Wan et al. 2024, arXiv:2408.07990",
    params=(
        Param(
            "select_topk",
            float,
            Scope.GLOBAL,
            1.0,
            minimum=0.0,
            maximum=1.0,
            doc="fraction of entries (with non-zero variance across models) kept",
        ),
        Param("int8_mask", bool, Scope.GLOBAL, False, doc="accepted for mergekit; no effect"),
    ),
    base=BasePolicy.REQUIRED,
    kernel_module="alloykit.methods.sce",
    streams=True,
    notes="Weights fall back to uniform only when every task vector is zero (mergekit: when "
    "the sum of mean squares is below 1e-6, which typical small fine-tuning deltas hit, "
    "silently making the weights uniform). The agreeing entries are divided by the exact sum "
    "of their weights (mergekit: by max(sum, 1e-6), which also shrinks entries whose agreeing "
    "weights sum below 1e-6).",
)

RAM_REFERENCE = (
    "Behavior Knowledge Merge in Reinforced Agentic Models, Yuan et al. 2026, arXiv:2601.13572"
)
EPSILON = Param(
    "epsilon",
    float,
    Scope.GLOBAL,
    1e-5,
    minimum=0.0,
    doc="a task-vector entry counts as changed where its magnitude exceeds this",
)

RAM = (
    Method(
        name="ram",
        summary="Reinforced Agent Merging: average the updates several models share, keep "
        "each model's unique updates whole.",
        reference=RAM_REFERENCE,
        params=(EPSILON,),
        base=BasePolicy.REQUIRED,
        kernel_module="alloykit.methods.ram",
        streams=True,
    ),
    Method(
        name="ramplus_tl",
        summary="RAM+ (tensor-local): RAM with each model's unique updates scaled up by its "
        "ratio of shared to unique updates in the tensor.",
        reference=RAM_REFERENCE,
        params=(
            Param("r", float, Scope.GLOBAL, 0.1, minimum=0.0, doc="rescaling strength"),
            Param(
                "alpha",
                float,
                Scope.GLOBAL,
                0.2,
                minimum=0.0,
                doc="cap on the shared-to-unique ratio",
            ),
            EPSILON,
        ),
        base=BasePolicy.REQUIRED,
        kernel_module="alloykit.methods.ram",
        streams=True,
        notes="The ratio is counted per tensor, as mergekit's ramplus_tl does (the paper's "
        "RAM+ counts over the whole model): unique updates are scaled by "
        "1 + r·min(shared/unique, alpha).",
    ),
)

ARCEE_FUSION = Method(
    name="arcee_fusion",
    summary="Take the other model's change only where its importance (|change| × KL of the "
    "rows' softmax) is an outlier: at least median + 1.5·IQR.",
    reference="Arcee Fusion, Arcee AI 2025, in mergekit (https://arcee.ai; no paper)",
    params=(),
    base=BasePolicy.REQUIRED,
    kernel_module="alloykit.methods.arcee_fusion",
    max_models=1,
    notes="Quantiles are exact for every tensor (mergekit estimates them from a random "
    "sample of 1e6 entries in larger tensors).",
)

DATA_DRIVEN = (
    Method(
        name="fisher",
        summary="Per-entry average weighted by each model's diagonal Fisher information.",
        reference="Merging Models with Fisher-Weighted Averaging, Matena & Raffel 2022, "
        "arXiv:2111.09832",
        params=(
            Param("weight", float, Scope.PER_MODEL, 1.0, minimum=0.0, doc="λ of each model"),
            Param(
                "fisher_floor",
                float,
                Scope.GLOBAL,
                1e-6,
                minimum=0.0,
                doc="Fisher entries below this count as this (the reference's 1e-6)",
            ),
        ),
        base=BasePolicy.UNUSED,
        kernel_module="alloykit.methods.fisher",
        statistics=(
            Statistic(
                "fisher",
                StatisticShape.DIAGONAL,
                doc="diagonal empirical Fisher of each parameter (alloykit calibrate)",
                fallback="the λ-weighted average",
            ),
        ),
        temporaries=3.0,
        notes="The floor applies to every model (the reference floors only the first, "
        "'target', model by default). The reference's option to divide each model's λ by the "
        "L2 norm of its whole Fisher is not applied: a kernel sees one tensor.",
    ),
    Method(
        name="regmean",
        summary="Per linear layer, the weight closest to every model's outputs on its inputs.",
        reference="Dataless Knowledge Fusion by Merging Weights of Language Models, Jin et al. "
        "2023, arXiv:2212.09849",
        params=(
            Param(
                "alpha",
                float,
                Scope.GLOBAL,
                0.95,
                minimum=0.0,
                maximum=1.0,
                doc="scale of the Grams' off-diagonal entries (1: exact regression)",
            ),
        ),
        base=BasePolicy.UNUSED,
        kernel_module="alloykit.methods.regmean",
        statistics=(
            Statistic(
                "gram",
                StatisticShape.GRAM,
                doc="Gram matrix of each linear layer's inputs (alloykit calibrate)",
                fallback="the plain average (norms, biases, embeddings)",
            ),
        ),
        streams=True,
        notes="Streams: the Gram sum is LU-factorised once per tensor in float64, then each "
        "chunk of rows is solved with it; a singular Gram sum takes the pseudo-inverse "
        "(minimum-norm solution).",
    ),
)

CATALOG: tuple[Method, ...] = (
    *LINEAR,
    NEARSWAP,
    KARCHER,
    *SPHERICAL,
    MODEL_STOCK,
    SCE,
    *RAM,
    ARCEE_FUSION,
    *DATA_DRIVEN,
    *(method.contract() for method in task_vector_settings.METHODS),
    *INTERFERENCE_CATALOG,
)
"""Every method alloykit offers, each with the module whose import attaches its kernel."""
