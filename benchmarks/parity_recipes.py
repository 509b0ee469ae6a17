"""The recipes that ``mergekit_parity.py`` runs through both alloykit and mergekit 0.1.5.

Each case is a recipe in mergekit's YAML format. Model references are written ``@base``,
``@ft1`` ... and bound to the tiny models of the case's family just before the run. A case is
*deterministic* (outputs must agree tensor by tensor) unless ``random`` is set: random
sparsification draws from different generators in the two tools, so only statistics of the
outputs can agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

FAMILIES: dict[str, dict[str, Any]] = {
    "llama": {"family": "llama", "finetunes": 3, "scale": 0.02},
    "llama-far": {"family": "llama", "finetunes": 3, "scale": 0.5},
    "gemma": {"family": "gemma", "finetunes": 3, "scale": 0.02},
    "llama-tied": {
        "family": "llama",
        "finetunes": 3,
        "scale": 0.02,
        "overrides": {"tie_word_embeddings": True},
    },
}
"""Model sets: a tiny family with fine-tunes at relative noise ``scale`` from the base.

``llama-far`` has task vectors 25x larger than ``llama``, above the 1e-6 energy floor
under which mergekit's SCE silently falls back to uniform model weights. ``gemma`` and
``llama-tied`` tie the output head to the input embeddings (no ``lm_head.weight`` saved).
"""


@dataclass(frozen=True)
class ParityCase:
    """One recipe to run with both tools."""

    name: str
    recipe: dict[str, Any]
    family: str = "llama"
    random: bool = False
    note: str = ""
    known: str = ""  # a documented, deliberate alloykit deviation: reported, not a failure
    mergekit_fails: str = ""  # why mergekit 0.1.5 cannot run it (alloykit's output must load)
    invalid: bool = False  # a recipe both tools must refuse

    @property
    def method(self) -> str:
        return str(self.recipe["merge_method"])


def bind(value: Any, paths: dict[str, str]) -> Any:
    """``value`` with every ``@name`` string replaced by the path of model ``name``."""
    if isinstance(value, dict):
        return {key: bind(item, paths) for key, item in value.items()}
    if isinstance(value, list):
        return [bind(item, paths) for item in value]
    if isinstance(value, str) and value.startswith("@"):
        return paths[value[1:]]
    return value


def entry(model: str, **parameters: Any) -> dict[str, Any]:
    """A ``models:`` entry, with ``parameters:`` only when some are given."""
    item: dict[str, Any] = {"model": model}
    if parameters:
        item["parameters"] = parameters
    return item


def three(
    weights: tuple[float, float, float] = (0.5, 0.3, 0.2), **per_model: tuple[Any, ...]
) -> list[dict[str, Any]]:
    """``ft1..ft3`` with the given weights and any other per-model parameter triples."""
    return [
        entry(f"@ft{i + 1}", weight=weights[i], **{k: v[i] for k, v in per_model.items()})
        for i in range(3)
    ]


def task_vectors(method: str, parameters: dict[str, Any] | None = None, **per_model: Any) -> dict:
    """A base + three fine-tunes recipe for a task-vector method."""
    recipe: dict[str, Any] = {
        "merge_method": method,
        "base_model": "@base",
        "models": three(**per_model),
        "dtype": "float32",
    }
    if parameters:
        recipe["parameters"] = parameters
    return recipe


DENSITY = (0.5, 0.6, 0.7)
DENSITY_ONE = (1.0, 1.0, 1.0)
GAMMA = (0.05, 0.05, 0.1)
EPSILON = (0.1, 0.1, 0.1)

SLERP_T = [
    {"filter": "self_attn", "value": [0.0, 0.5, 0.3, 0.7, 1.0]},
    {"filter": "mlp", "value": [1.0, 0.5, 0.7, 0.3, 0.0]},
    {"value": 0.5},
]

CASES: tuple[ParityCase, ...] = (
    ParityCase(
        "linear",
        {"merge_method": "linear", "models": three(), "dtype": "float32"},
    ),
    ParityCase(
        "linear normalize=false",
        {
            "merge_method": "linear",
            "models": three((0.6, 0.3, 0.3)),
            "parameters": {"normalize": False},
            "dtype": "float32",
        },
    ),
    ParityCase(
        "linear filter+gradient",
        {
            "merge_method": "linear",
            "models": [
                entry(
                    "@ft1",
                    weight=[{"filter": "self_attn", "value": [0.1, 0.9]}, {"value": 0.5}],
                ),
                entry("@ft2", weight=[{"filter": "mlp", "value": 0.8}, {"value": [1.0, 0.2]}]),
                entry("@ft3", weight=0.3),
            ],
            "dtype": "float32",
        },
    ),
    ParityCase(
        "linear bf16",
        {"merge_method": "linear", "models": three(), "dtype": "bfloat16"},
        note="recipe dtype bfloat16",
    ),
    ParityCase(
        "task_arithmetic",
        task_vectors("task_arithmetic", {"lambda": 0.8}),
    ),
    ParityCase("ties", task_vectors("ties", {"normalize": True}, density=DENSITY)),
    ParityCase("ties normalize=false", task_vectors("ties", {"normalize": False}, density=DENSITY)),
    ParityCase(
        "ties bf16",
        {**task_vectors("ties", density=DENSITY), "dtype": "bfloat16"},
        note="recipe dtype bfloat16",
        known="compute dtype: mergekit casts inputs to the recipe dtype and computes task "
        "vectors in bfloat16; alloykit computes in float32 and casts once (DESIGN.md)",
    ),
    ParityCase("breadcrumbs", task_vectors("breadcrumbs", density=DENSITY, gamma=GAMMA)),
    ParityCase("breadcrumbs_ties", task_vectors("breadcrumbs_ties", density=DENSITY, gamma=GAMMA)),
    ParityCase(
        "model_stock",
        {
            "merge_method": "model_stock",
            "base_model": "@base",
            "models": [entry("@ft1"), entry("@ft2"), entry("@ft3")],
            "dtype": "float32",
        },
    ),
    ParityCase(
        "model_stock filter_wise",
        {
            "merge_method": "model_stock",
            "base_model": "@base",
            "models": [entry("@ft1"), entry("@ft2"), entry("@ft3")],
            "parameters": {"filter_wise": True},
            "dtype": "float32",
        },
    ),
    ParityCase(
        "slerp slices t-gradient",
        {
            "merge_method": "slerp",
            "base_model": "@base",
            "slices": [
                {
                    "sources": [
                        {"model": "@base", "layer_range": [0, 4]},
                        {"model": "@ft1", "layer_range": [0, 4]},
                    ]
                }
            ],
            "parameters": {"t": SLERP_T},
            "dtype": "float32",
        },
    ),
    ParityCase(
        "nearswap",
        {
            "merge_method": "nearswap",
            "base_model": "@base",
            "models": [entry("@ft1")],
            "parameters": {"t": 0.0003},
            "dtype": "float32",
        },
    ),
    ParityCase(
        "nuslerp",
        {
            "merge_method": "nuslerp",
            "models": [entry("@ft1", weight=0.3), entry("@ft2", weight=0.7)],
            "dtype": "float32",
        },
    ),
    ParityCase(
        "nuslerp base row_wise",
        {
            "merge_method": "nuslerp",
            "base_model": "@base",
            "models": [entry("@ft1", weight=0.4), entry("@ft2", weight=0.6)],
            "parameters": {"nuslerp_flatten": False, "nuslerp_row_wise": True},
            "dtype": "float32",
        },
    ),
    ParityCase(
        "multislerp",
        {"merge_method": "multislerp", "models": three(), "dtype": "float32"},
    ),
    ParityCase(
        "multislerp base",
        {
            "merge_method": "multislerp",
            "base_model": "@base",
            "models": three(),
            "dtype": "float32",
        },
        note="norm weights have zero task vectors: both tools should refuse",
    ),
    ParityCase(
        "karcher",
        {
            "merge_method": "karcher",
            "models": [entry("@ft1"), entry("@ft2"), entry("@ft3")],
            "dtype": "float32",
        },
    ),
    ParityCase(
        "karcher with base_model",
        {
            "merge_method": "karcher",
            "base_model": "@base",
            "models": [entry("@ft1"), entry("@ft2"), entry("@ft3")],
            "dtype": "float32",
        },
        note="base_model listed for a method that takes no base",
    ),
    ParityCase(
        "sce",
        {
            "merge_method": "sce",
            "base_model": "@base",
            "models": [entry("@ft1"), entry("@ft2"), entry("@ft3")],
            "parameters": {"select_topk": 0.5},
            "dtype": "float32",
        },
        note="task vectors ~4e-4",
        known="alloykit weights models by task-vector energy; mergekit 0.1.5 falls back to "
        "uniform weights when the energies sum below 1e-6 (alloykit's sce notes)",
    ),
    ParityCase(
        "sce (large deltas)",
        {
            "merge_method": "sce",
            "base_model": "@base",
            "models": [entry("@ft1"), entry("@ft2"), entry("@ft3")],
            "parameters": {"select_topk": 0.5},
            "dtype": "float32",
        },
        family="llama-far",
        note="task vectors ~1e-2",
    ),
    ParityCase(
        "dare_linear d=1",
        task_vectors("dare_linear", density=DENSITY_ONE),
        note="density 1.0: no random draw",
    ),
    ParityCase(
        "dare_ties d=1",
        task_vectors("dare_ties", density=DENSITY_ONE),
        note="density 1.0: no random draw",
    ),
    ParityCase(
        "della d=1",
        task_vectors("della", density=DENSITY_ONE, epsilon=EPSILON),
        note="density 1.0: no random draw",
    ),
    ParityCase(
        "della_linear d=1",
        task_vectors("della_linear", density=DENSITY_ONE, epsilon=EPSILON),
        note="density 1.0: no random draw",
    ),
    ParityCase(
        "dare_linear",
        task_vectors("dare_linear", density=DENSITY),
        random=True,
    ),
    ParityCase("dare_ties", task_vectors("dare_ties", density=DENSITY), random=True),
    ParityCase("della", task_vectors("della", density=DENSITY, epsilon=EPSILON), random=True),
    ParityCase(
        "della_linear",
        task_vectors("della_linear", density=DENSITY, epsilon=EPSILON),
        random=True,
    ),
    ParityCase(
        "arcee_fusion",
        {
            "merge_method": "arcee_fusion",
            "base_model": "@base",
            "models": [entry("@base"), entry("@ft1")],
            "dtype": "float32",
        },
    ),
    ParityCase(
        "ram",
        {
            "merge_method": "ram",
            "base_model": "@base",
            "models": [entry("@ft1"), entry("@ft2"), entry("@ft3")],
            "parameters": {"epsilon": 0.0003},
            "dtype": "float32",
        },
    ),
    ParityCase(
        "ramplus_tl",
        {
            "merge_method": "ramplus_tl",
            "base_model": "@base",
            "models": [entry("@ft1"), entry("@ft2"), entry("@ft3")],
            "parameters": {"epsilon": 0.0003, "r": 0.1, "alpha": 0.2},
            "dtype": "float32",
        },
    ),
    ParityCase(
        "passthrough frankenmerge",
        {
            "merge_method": "passthrough",
            "slices": [
                {"sources": [{"model": "@ft1", "layer_range": [0, 2]}]},
                {"sources": [{"model": "@ft2", "layer_range": [1, 4]}]},
            ],
            "dtype": "float32",
        },
        note="layers [0,2) of ft1 + [1,4) of ft2",
    ),
    ParityCase(
        "passthrough frankenmerge scale filter",
        {
            "merge_method": "passthrough",
            "slices": [
                {"sources": [{"model": "@ft1", "layer_range": [0, 2]}]},
                {
                    "sources": [
                        {
                            "model": "@ft2",
                            "layer_range": [1, 4],
                            "parameters": {
                                "scale": [{"filter": "layers.1.", "value": 0.5}, {"value": 1.0}]
                            },
                        }
                    ]
                },
            ],
            "dtype": "float32",
        },
        note="per-model filters match the input tensor's name (ft2 layer 1 -> output layer 2)",
    ),
    ParityCase(
        "linear with base_model",
        {
            "merge_method": "linear",
            "base_model": "@base",
            "models": three(),
            "parameters": {"weight": 0.25},
            "dtype": "float32",
        },
        note="base_model listed for a method that takes no base",
    ),
    ParityCase(
        "gemma linear (tied)",
        {"merge_method": "linear", "models": three(), "dtype": "float32"},
        family="gemma",
    ),
    ParityCase(
        "gemma ties (tied)",
        task_vectors("ties", density=DENSITY),
        family="gemma",
    ),
    ParityCase(
        "llama-tied ties",
        task_vectors("ties", density=DENSITY),
        family="llama-tied",
    ),
    ParityCase(
        "gemma slerp (tied)",
        {
            "merge_method": "slerp",
            "base_model": "@base",
            "models": [entry("@base"), entry("@ft1")],
            "parameters": {"t": [0.2, 0.8]},
            "dtype": "float32",
        },
        family="gemma",
    ),
)
