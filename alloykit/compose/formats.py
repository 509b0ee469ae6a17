"""Output MoE architectures: which dense families each accepts, its config and tensor names.

Tensor names are those that transformers' own ``save_pretrained`` writes for the class: one
tensor per expert and projection (Mixtral: ``block_sparse_moe.experts.E.w1/w2/w3``; the
others: ``mlp.experts.E.gate_proj/up_proj/down_proj``). transformers 5 fuses them into
``experts.gate_up_proj`` / ``experts.down_proj`` when it loads a checkpoint, and writes them
back per expert when it saves one, so this layout loads in transformers 4 and 5 and in the
other runtimes that read Hugging Face MoE checkpoints.

Every format is set up so that the MoE computes exactly its experts' function when they are
identical: routing weights of the chosen experts sum to 1 (Mixtral always renormalises the
top-k softmax; the others get ``norm_topk_prob: true`` and ``routed_scaling_factor: 1``), and
the attention is configured as in the dense family (biases, rotary dims, sliding windows).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

PROJECTIONS = ("gate_proj", "up_proj", "down_proj")
_MIXTRAL_STEMS = {"gate_proj": "w1", "up_proj": "w3", "down_proj": "w2"}


class SharedPolicy(str, Enum):
    """What a format does with shared experts (experts every token goes through)."""

    NONE = "none"  # no shared experts
    ONE_GATED = "exactly one, with a sigmoid gate"
    UNGATED = "any number, always on"


@dataclass(frozen=True)
class MoEShape:
    """The sizes a format's config needs."""

    experts: int
    experts_per_token: int
    shared_experts: int
    intermediate_size: int
    attention_bias: bool
    num_layers: int


@dataclass(frozen=True)
class MoEFormat:
    """One output architecture, named as mergekit names it where mergekit has it."""

    name: str
    model_type: str
    class_name: str
    input_types: tuple[str, ...]
    shared: SharedPolicy
    block: str  # module holding router and experts inside a decoder layer
    configure: Callable[[dict[str, Any], MoEShape], dict[str, Any]]
    shared_module: str | None = None
    score_bias: bool = False  # DeepSeek-V3-style e_score_correction_bias next to the router

    def router(self, layer_prefix: str) -> str:
        return f"{layer_prefix}{self.block}.gate.weight"

    def expert(self, layer_prefix: str, expert: int, projection: str) -> str:
        if self.model_type == "mixtral":
            return (
                f"{layer_prefix}{self.block}.experts.{expert}.{_MIXTRAL_STEMS[projection]}.weight"
            )
        return f"{layer_prefix}{self.block}.experts.{expert}.{projection}.weight"

    def shared_expert(self, layer_prefix: str, projection: str) -> str:
        return f"{layer_prefix}{self.block}.{self.shared_module}.{projection}.weight"

    def shared_gate(self, layer_prefix: str) -> str:
        return f"{layer_prefix}{self.block}.shared_expert_gate.weight"

    def router_bias(self, layer_prefix: str) -> str:
        return f"{layer_prefix}{self.block}.gate.e_score_correction_bias"

    def unsupported(self, model_type: str, shared: int, shared_prompts: bool) -> str | None:
        """Why this format cannot be built from these inputs, or None when it can."""
        if model_type not in self.input_types:
            return f"{self.name} takes {', '.join(self.input_types)} experts, not {model_type}"
        if self.shared is SharedPolicy.NONE and shared:
            return f"{self.name} has no shared experts"
        if self.shared is SharedPolicy.ONE_GATED and shared != 1:
            return f"{self.name} needs exactly one shared expert, got {shared}"
        if self.shared is SharedPolicy.UNGATED and shared_prompts:
            return f"{self.name}'s shared experts are not gated, so they take no prompts"
        return None


def _common(config: dict[str, Any], class_name: str) -> dict[str, Any]:
    out = {k: v for k, v in config.items() if k not in ("architectures", "auto_map", "model_type")}
    out["architectures"] = [class_name]
    return out


def _sliding_window(config: dict[str, Any]) -> int | None:
    """The dense model's sliding window when every layer uses one (Mistral), else None."""
    if config.get("model_type") != "mistral":
        return None
    window = config.get("sliding_window")
    return window if isinstance(window, int) and window > 0 else None


def _mixtral(config: dict[str, Any], shape: MoEShape) -> dict[str, Any]:
    out = _common(config, "MixtralForCausalLM")
    out.update(
        num_local_experts=shape.experts,
        num_experts_per_tok=shape.experts_per_token,
        intermediate_size=shape.intermediate_size,
        sliding_window=_sliding_window(config),
        router_jitter_noise=0.0,
    )
    return out


def _qwen2_moe(config: dict[str, Any], shape: MoEShape) -> dict[str, Any]:
    out = _common(config, "Qwen2MoeForCausalLM")
    out.update(
        num_experts=shape.experts,
        num_experts_per_tok=shape.experts_per_token,
        moe_intermediate_size=shape.intermediate_size,
        shared_expert_intermediate_size=shape.intermediate_size,
        decoder_sparse_step=1,
        mlp_only_layers=[],
        norm_topk_prob=True,
        qkv_bias=shape.attention_bias,
    )
    window = _sliding_window(config)
    if window is not None:
        out.update(
            use_sliding_window=True,
            sliding_window=window,
            layer_types=["sliding_attention"] * shape.num_layers,
        )
    return out


def _qwen3_moe(config: dict[str, Any], shape: MoEShape) -> dict[str, Any]:
    out = _common(config, "Qwen3MoeForCausalLM")
    out.update(
        num_experts=shape.experts,
        num_experts_per_tok=shape.experts_per_token,
        moe_intermediate_size=shape.intermediate_size,
        decoder_sparse_step=1,
        mlp_only_layers=[],
        norm_topk_prob=True,
    )
    return out


def _deepseek_v3_routing(out: dict[str, Any], shape: MoEShape) -> None:
    out.update(
        n_routed_experts=shape.experts,
        n_shared_experts=shape.shared_experts,
        num_experts_per_tok=shape.experts_per_token,
        moe_intermediate_size=shape.intermediate_size,
        first_k_dense_replace=0,
        n_group=1,
        topk_group=1,
        norm_topk_prob=True,
        routed_scaling_factor=1.0,
    )


def _glm4_moe(config: dict[str, Any], shape: MoEShape) -> dict[str, Any]:
    out = _common(config, "Glm4MoeForCausalLM")
    _deepseek_v3_routing(out, shape)
    rope = dict(config.get("rope_parameters") or {"rope_theta": 10000.0, "rope_type": "default"})
    rope["partial_rotary_factor"] = 1.0
    out.update(
        rope_parameters=rope,
        partial_rotary_factor=1.0,
        attention_bias=shape.attention_bias,
        use_qk_norm=False,
        num_nextn_predict_layers=0,
    )
    out.pop("sliding_window", None)
    return out


def _dots1(config: dict[str, Any], shape: MoEShape) -> dict[str, Any]:
    out = _common(config, "Dots1ForCausalLM")
    _deepseek_v3_routing(out, shape)
    if not config.get("use_sliding_window"):
        out["sliding_window"] = None
    return out


FORMATS: tuple[MoEFormat, ...] = (
    MoEFormat(
        name="Mixtral",
        model_type="mixtral",
        class_name="MixtralForCausalLM",
        input_types=("llama", "mistral"),
        shared=SharedPolicy.NONE,
        block="block_sparse_moe",
        configure=_mixtral,
    ),
    MoEFormat(
        name="DeepSeek MoE",
        model_type="glm4_moe",
        class_name="Glm4MoeForCausalLM",
        input_types=("llama", "mistral", "qwen2"),
        shared=SharedPolicy.UNGATED,
        block="mlp",
        configure=_glm4_moe,
        shared_module="shared_experts",
        score_bias=True,
    ),
    MoEFormat(
        name="Qwen MoE",
        model_type="qwen2_moe",
        class_name="Qwen2MoeForCausalLM",
        input_types=("llama", "mistral", "qwen2"),
        shared=SharedPolicy.ONE_GATED,
        block="mlp",
        configure=_qwen2_moe,
        shared_module="shared_expert",
    ),
    MoEFormat(
        name="Qwen3 MoE",
        model_type="qwen3_moe",
        class_name="Qwen3MoeForCausalLM",
        input_types=("qwen3",),
        shared=SharedPolicy.NONE,
        block="mlp",
        configure=_qwen3_moe,
    ),
    MoEFormat(
        name="DeepSeek MoE",
        model_type="dots1",
        class_name="Dots1ForCausalLM",
        input_types=("qwen3",),
        shared=SharedPolicy.UNGATED,
        block="mlp",
        configure=_dots1,
        shared_module="shared_experts",
        score_bias=True,
    ),
)


def _normalise(name: str) -> str:
    return "".join(c for c in name.lower() if c.isalnum())


def formats_named(name: str | None) -> list[MoEFormat]:
    """Formats a recipe's ``architecture:`` may mean, in order of preference.

    As in mergekit, a name selects every format whose name starts with it (``qwen`` → Qwen
    MoE and Qwen3 MoE), ignoring case; a transformers model type (``qwen2_moe``) selects one.
    """
    if name is None:
        return list(FORMATS)
    wanted = _normalise(name)
    return [
        f
        for f in FORMATS
        if _normalise(f.name).startswith(wanted) or _normalise(f.model_type) == wanted
    ]


def format_names() -> str:
    """Every format with the model type it writes, for error hints and docs."""
    return ", ".join(f"{f.name} ({f.model_type})" for f in FORMATS)


def build_config(fmt: MoEFormat, dense_config: dict[str, Any], shape: MoEShape) -> dict[str, Any]:
    """The output config.json, normalised by the installed transformers' config class."""
    from transformers import AutoConfig

    fields = fmt.configure(dense_config, shape)
    for key in ("transformers_version", "_name_or_path"):
        fields.pop(key, None)
    return AutoConfig.for_model(fmt.model_type, **fields).to_dict()
