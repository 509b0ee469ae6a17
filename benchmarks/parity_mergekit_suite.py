"""mergekit's own test and example recipes, translated for ``mergekit_parity.py``.

Sources (mergekit's repository): ``tests/test_basic_merges.py`` (every ``MergeConfiguration``
it builds, the VLM variants on Llava included) and ``examples/*.yml``, with the models
replaced by tiny local ones and layer ranges scaled to their depth. As in those tests,
``model_a``, ``model_b`` and ``model_c`` are separately initialised models (``@ft1``,
``@ft2``, ``@base`` of an ``independent`` family), weighted 0.6 and 0.4 in bfloat16. The
examples run on fine-tunes of one base, in their own dtype. Recipes with ``modules:`` run on
the vision-language models mergekit defines modules for.

``tests/test_tokenizer.py`` runs on its three models (family ``tokenizers``): ``@base``
(64 rows, 64 tokens), ``@ft1`` ("padded": 64 rows, four unused tokens added) and ``@ft2``
("chatml": 66 rows, ``<|im_start|>`` and ``<|im_end|>`` added); the embeddings and
``config.json`` are compared (the parity run copies no tokenizer). Not translated:
``tests/test_chat_template.py`` (it checks only the written template) and the unit tests that
build no recipe.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from parity_recipes import ParityCase, entry

A, B, C = "@ft1", "@ft2", "@base"  # mergekit's model_a, model_b, model_c

SUITE_FAMILIES: dict[str, dict[str, Any]] = {
    "pico": {"family": "llama", "finetunes": 2, "independent": True},
    "granite": {"family": "granite", "finetunes": 1, "independent": True},
    "gpt2": {"family": "gpt2", "finetunes": 0, "independent": True},
    "llava": {"multimodal": "llava", "finetunes": 2, "independent": True},
    "mistral3": {"multimodal": "mistral3", "finetunes": 2, "scale": 0.02},
    "qwen2_vl": {"multimodal": "qwen2_vl", "finetunes": 2, "scale": 0.02},
    "tokenizers": {"tokenizers": True, "finetunes": 2},
}
"""``pico``/``granite``/``gpt2``/``llava``: separately initialised models, as mergekit's tests
build them; ``mistral3``/``qwen2_vl``: a base and fine-tunes, for ``modules:`` recipes."""


TOKENIZER_MODELS = {"base": (64, []), "ft1": (64, [f"<UNUSED_{i}>" for i in range(4)])}
TOKENIZER_MODELS["ft2"] = (66, ["<|im_start|>", "<|im_end|>"])
"""Rows of the embeddings and tokens added to the 64-token vocabulary, as in mergekit's
``model_base``, ``model_padded`` and ``model_chatml``."""


def build_tokenizer_models(root: Path) -> dict[str, Path]:
    """mergekit's tokenizer-test models: tiny llamas with word-level tokenizers of 64 tokens
    (``<unk>``, ``<s>``, ``</s>``, ``_tok_3`` ...) plus added tokens."""
    import tokenizers
    from transformers import LlamaTokenizerFast

    from alloykit.tiny_models import build_model

    words = ["<unk>", "<s>", "</s>"] + [f"_tok_{i}" for i in range(3, 64)]
    data = {
        "version": "1.0",
        "model": {"type": "BPE", "vocab": dict(zip(words, range(64), strict=True)), "merges": []},
        "added_tokens": [],
    }
    paths = {}
    for seed, (name, (rows, added)) in enumerate(TOKENIZER_MODELS.items()):
        path = build_model("llama", root / name, seed=seed, vocab_size=rows)
        with tempfile.TemporaryDirectory() as scratch:
            file = Path(scratch) / "tokenizer.json"
            tokenizers.Tokenizer.from_str(json.dumps(data)).save(str(file))
            tokenizer = LlamaTokenizerFast(tokenizer_file=str(file))
        tokenizer.add_tokens(added)
        tokenizer.save_pretrained(path)
        paths[name] = path
    return paths


def tokenizer_tests() -> list[ParityCase]:
    """``TestTokenizerMerges``: every model at weight 1.0, float32."""
    label, family = "mk-test tokenizer", "tokenizers"

    def recipe(models: list[str], method: str = "linear", **keys: Any) -> dict[str, Any]:
        return {
            "merge_method": method,
            "base_model": C,
            "models": [entry(m, weight=1.0) for m in models],
            "dtype": "float32",
            **keys,
        }

    three = [C, A, B]
    force = {
        "source": "union",
        "tokens": {
            "_tok_10": {"source": B, "force": True},
            "_tok_11": {"source": C, "force": True},
        },
    }
    by_id = {
        "source": "base",
        "tokens": {
            "_tok_20": {
                "source": {"kind": "model_token", "model": B, "token_id": 64},
                "force": True,
            },
            "_tok_21": {
                "source": {"kind": "model_token", "model": C, "token": "<s>"},
                "force": True,
            },
        },
    }
    slerp = recipe([C, B], "slerp", tokenizer_source="union", parameters={"t": 0.5})
    padded = recipe([B], tokenizer={"source": "base", "pad_to_multiple_of": 16})
    padded["base_model"] = B
    return [
        ParityCase(f"{label} legacy mode", recipe(three), family),
        ParityCase(f"{label} source base", recipe(three, tokenizer_source="base"), family),
        ParityCase(f"{label} source union", recipe(three, tokenizer_source="union"), family),
        ParityCase(f"{label} source model", recipe(three, tokenizer_source=B), family),
        ParityCase(f"{label} slerp union", slerp, family),
        ParityCase(f"{label} force token", recipe([C, B], tokenizer=force), family),
        ParityCase(f"{label} model token id", recipe([C, B], tokenizer=by_id), family),
        ParityCase(f"{label} pad_to_multiple_of", padded, family),
    ]


def two_model(
    method: str,
    a: str = A,
    b: str = B,
    base: str | None = None,
    parameters: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """mergekit's ``two_model_config``: a at weight 0.6, b at 0.4, dtype bfloat16."""
    recipe: dict[str, Any] = {
        "merge_method": method,
        "models": [entry(a, weight=0.6), entry(b, weight=0.4)],
        "dtype": "bfloat16",
    }
    if base is not None:
        recipe["base_model"] = base
    if parameters:
        recipe["parameters"] = parameters
    return recipe


def nuslerp_grid(family: str, label: str) -> list[ParityCase]:
    """``test_nuslerp_merges``: every base × row_wise × flatten, then weights summing to 0."""
    cases = []
    for base in (None, C):
        for row_wise in (False, True):
            for flatten in (False, True):
                name = (
                    f"{label} nuslerp {'base' if base else 'no base'} "
                    f"row_wise={row_wise} flatten={flatten}"
                )
                parameters = {"nuslerp_row_wise": row_wise, "nuslerp_flatten": flatten}
                cases.append(
                    ParityCase(name, two_model("nuslerp", base=base, parameters=parameters), family)
                )
    zero = two_model(
        "nuslerp", base=C, parameters={"nuslerp_row_wise": False, "nuslerp_flatten": False}
    )
    zero["models"] = [entry(A, weight=-0.5), entry(B, weight=0.5)]
    cases.append(ParityCase(f"{label} nuslerp weights sum to 0", zero, family))
    return cases


def shared_tests(family: str, label: str) -> list[ParityCase]:
    """The recipes ``TestBasicMerges`` and its VLM variants have in common."""
    slerp = two_model("slerp", base=A)
    slerp["parameters"] = {"t": 0.35}
    return [
        ParityCase(f"{label} linear", two_model("linear"), family),
        ParityCase(f"{label} slerp", slerp, family, note="weight given to slerp: ignored"),
        *nuslerp_grid(family, label),
        ParityCase(f"{label} task_arithmetic", two_model("task_arithmetic", base=C), family),
        ParityCase(f"{label} breadcrumbs", two_model("breadcrumbs", base=C), family),
        ParityCase(f"{label} ties", two_model("ties", base=C, parameters={"density": 0.3}), family),
        ParityCase(
            f"{label} dare_ties",
            two_model("dare_ties", base=C, parameters={"density": 0.66}),
            family,
            random=True,
        ),
        ParityCase(f"{label} model_stock", two_model("model_stock", B, C, base=A), family),
        ParityCase(
            f"{label} model_stock filter_wise",
            two_model("model_stock", B, C, base=A, parameters={"filter_wise": True}),
            family,
        ),
    ]


def text_only_tests() -> list[ParityCase]:
    """``TestBasicMerges`` recipes that have no VLM variant."""
    label, family = "mk-test", "pico"
    scale = {
        "merge_method": "passthrough",
        "models": [entry(A, scale=[{"filter": "o_proj", "value": 0}, {"value": 1}])],
    }
    return [
        ParityCase(f"{label} passthrough scale", scale, family),
        ParityCase(
            f"{label} sce", two_model("sce", base=C, parameters={"select_topk": 0.5}), family
        ),
        ParityCase(f"{label} ram", two_model("ram", base=C), family),
        ParityCase(
            f"{label} ramplus_tl",
            two_model("ramplus_tl", base=C, parameters={"r": 0.05, "alpha": 1.0}),
            family,
        ),
        ParityCase(f"{label} multislerp", two_model("multislerp", base=C), family),
        ParityCase(f"{label} arcee_fusion", two_model("arcee_fusion", base=A), family),
        ParityCase(
            f"{label} nearswap", two_model("nearswap", base=A, parameters={"t": 0.0001}), family
        ),
        ParityCase(
            f"{label} della",
            two_model(
                "della", base=C, parameters={"density": 0.66, "epsilon": 0.05, "lambda": 0.5}
            ),
            family,
            random=True,
        ),
        ParityCase(
            f"{label} della invalid epsilon",
            two_model(
                "della", base=C, parameters={"density": 0.66, "epsilon": 1.35, "lambda": 0.5}
            ),
            family,
            note="mergekit's test expects a ValueError",
            invalid=True,
        ),
        ParityCase(
            f"{label} karcher",
            two_model("karcher", base=C, parameters={"max_iter": 5, "tol": 1e-5}),
            family,
            known="alloykit's karcher honours each model's weight (0.6, 0.4 here); mergekit "
            "0.1.5 weights every model equally (with weights 1.0 the two agree to 2e-7)",
        ),
        ParityCase(
            f"{label} granite copy",
            {"merge_method": "passthrough", "models": [entry(A)], "dtype": "bfloat16"},
            "granite",
        ),
        ParityCase(
            f"{label} granite linear",
            {
                "merge_method": "linear",
                "models": [entry(A, weight=0.6), entry(C, weight=0.4)],
                "dtype": "bfloat16",
            },
            "granite",
        ),
        ParityCase(
            f"{label} granite slerp",
            {
                "merge_method": "slerp",
                "base_model": A,
                "models": [entry(A), entry(C)],
                "parameters": {"t": 0.5},
                "dtype": "bfloat16",
            },
            "granite",
        ),
        ParityCase(
            f"{label} gpt2 copy",
            {"merge_method": "passthrough", "models": [entry(C)], "dtype": "bfloat16"},
            "gpt2",
        ),
        ParityCase(
            f"{label} gpt2 stack",
            {
                "merge_method": "passthrough",
                "slices": [{"sources": [{"model": C, "layer_range": [0, 4]}]}] * 2,
                "dtype": "bfloat16",
            },
            "gpt2",
            note="all 4 layers twice (mergekit's test: 12 twice)",
        ),
    ]


def example_recipes() -> list[ParityCase]:
    """``examples/*.yml`` on fine-tunes of the tiny llama; 40 layers scaled to 4."""
    label, family = "mk-example", "llama"
    ties = {
        "merge_method": "ties",
        "base_model": "@base",
        "models": [
            entry("@ft1", density=[1, 0.7, 0.1], weight=1.0),
            entry("@ft2", density=0.5, weight=[0, 0.3, 0.7, 1]),
            entry("@ft3", density=0.33, weight=[{"filter": "mlp", "value": 0.5}, {"value": 0}]),
        ],
        "parameters": {"normalize": True, "int8_mask": True},
        "dtype": "float16",
    }
    slerp_t = [
        {"filter": "self_attn", "value": [0, 0.5, 0.3, 0.7, 1]},
        {"filter": "mlp", "value": [1, 0.5, 0.7, 0.3, 0]},
        {"value": 0.5},
    ]
    return [
        ParityCase(
            f"{label} linear.yml",
            {
                "merge_method": "linear",
                "models": [
                    entry("@ft1", weight=1.0),
                    entry("@ft2", weight=0.3),
                    entry("@ft3", weight=0.5),
                ],
                "dtype": "float16",
            },
            family,
        ),
        ParityCase(f"{label} ties.yml", ties, family),
        ParityCase(
            f"{label} gradient-slerp.yml",
            {
                "merge_method": "slerp",
                "base_model": "@ft1",
                "slices": [
                    {
                        "sources": [
                            {"model": "@ft1", "layer_range": [0, 4]},
                            {"model": "@ft2", "layer_range": [0, 4]},
                        ]
                    }
                ],
                "parameters": {"t": slerp_t},
                "dtype": "float16",
            },
            family,
        ),
        ParityCase(
            f"{label} orcamini-platy-44layer.yml",
            {
                "merge_method": "passthrough",
                "slices": [
                    {"sources": [{"model": "@ft1", "layer_range": [0, 3]}]},
                    {"sources": [{"model": "@ft2", "layer_range": [2, 4]}]},
                ],
                "dtype": "float16",
            },
            family,
            note="[0, 24) + [20, 40) of 40 layers scaled to [0, 3) + [2, 4) of 4",
        ),
        ParityCase(
            f"{label} bio-merge.yml",
            {
                "merge_method": "ties",
                "base_model": "@base",
                "models": [
                    entry("@ft1", density=0.5, weight=0.5),
                    entry("@ft2", density=0.5, weight=0.5),
                ],
                "parameters": {"normalize": False, "int8_mask": True},
                "dtype": "float16",
            },
            family,
        ),
        ParityCase(
            f"{label} arcee_fusion.yml",
            {
                "merge_method": "arcee_fusion",
                "base_model": "@ft1",
                "models": [entry("@ft1"), entry("@ft2")],
                "dtype": "bfloat16",
            },
            family,
        ),
    ]


def module_recipes() -> list[ParityCase]:
    """``modules:`` recipes: each module with its own models, slices and parameters."""
    linear = {
        "merge_method": "linear",
        "parameters": {"weight": 0.5},
        "dtype": "float32",
        "modules": {
            "text_decoder": {"models": [entry(A, weight=0.7), entry(B, weight=0.3)]},
            "vision_tower": {
                "models": [entry(A), entry(B)],
                "parameters": {"weight": [{"filter": "attention", "value": 0.9}, {"value": 0.2}]},
            },
            "multi_modal_projector": {"models": [entry(A), entry(B)]},
        },
    }
    ties = {
        "merge_method": "ties",
        "base_model": C,
        "parameters": {"density": 0.5},
        "dtype": "float32",
        "modules": {
            "text_decoder": {"models": [entry(A, weight=1.0), entry(B, weight=0.5)]},
            "vision_tower": {
                "models": [entry(A), entry(B)],
                "parameters": {"density": 0.9, "weight": 0.7},
            },
            "multi_modal_projector": {"models": [entry(A, weight=1.0), entry(B, weight=1.0)]},
        },
    }
    stacked = {
        "merge_method": "passthrough",
        "dtype": "float32",
        "modules": {
            "text_decoder": {
                "slices": [
                    {"sources": [{"model": C, "layer_range": [0, 3]}]},
                    {"sources": [{"model": A, "layer_range": [1, 4]}]},
                ]
            },
            "vision_tower": {
                "slices": [
                    {"sources": [{"model": C, "layer_range": [0, 2]}]},
                    {"sources": [{"model": A, "layer_range": [1, 2]}]},
                ]
            },
            "multi_modal_projector": {"models": [entry(C)]},
        },
    }
    qwen_fails = (
        "mergekit 0.1.5 reads num_hidden_layers at the top of Qwen2VLConfig, which transformers "
        "5 keeps in text_config only"
    )
    return [
        ParityCase("modules mistral3 linear", linear, "mistral3"),
        ParityCase("modules mistral3 ties", ties, "mistral3"),
        ParityCase("modules mistral3 slices", stacked, "mistral3"),
        ParityCase("modules qwen2_vl linear", linear, "qwen2_vl", mergekit_fails=qwen_fails),
        ParityCase("modules qwen2_vl slices", stacked, "qwen2_vl", mergekit_fails=qwen_fails),
    ]


SUITE: tuple[ParityCase, ...] = (
    *shared_tests("pico", "mk-test"),
    *text_only_tests(),
    *shared_tests("llava", "mk-test VLM"),
    *tokenizer_tests(),
    *example_recipes(),
    *module_recipes(),
)
