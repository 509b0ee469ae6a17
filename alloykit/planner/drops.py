"""Every input tensor is mapped to the output or dropped with a reason shown in the plan: the
reasons, and the refusal of tensors that have no place in the output."""

from __future__ import annotations

from alloykit.arch.layers import parse_layer_name, tied_embeddings
from alloykit.arch.modules import ModuleLayout
from alloykit.checkpoint.source import ModelSource
from alloykit.errors import PlanError
from alloykit.methods import BasePolicy, Method, get_method
from alloykit.plan import DroppedTensor, TensorRef
from alloykit.recipe.model import Recipe


def dropped_tensors(
    recipe: Recipe,
    method: Method,
    sources: dict[str, ModelSource],
    used: set[TensorRef],
    reference: str,
    layout: ModuleLayout | None,
    *,
    drop_unmapped: bool,
) -> list[DroppedTensor]:
    """The input tensors no output tensor uses, each with its reason; those with none (an
    architecture the reference lacks) are refused unless ``drop_unmapped``."""
    dropped: list[DroppedTensor] = []
    unmapped: list[DroppedTensor] = []
    for ref, source in sources.items():
        for name in source.tensors:
            if TensorRef(ref, name) in used:
                continue
            reason = _drop_reason(recipe, method, sources, reference, layout, ref, name)
            if reason is None:
                unmapped.append(DroppedTensor(ref, name, f"not present in {reference!r}"))
            else:
                dropped.append(DroppedTensor(ref, name, reason))
    if unmapped and not drop_unmapped:
        first = unmapped[0]
        raise PlanError(
            f"tensor {first.name!r} of model {first.model!r} has no place in the output"
            + (f" (and {len(unmapped) - 1} more)" if len(unmapped) > 1 else ""),
            "the models' architectures differ; pass --drop-unmapped to drop such tensors",
        )
    return dropped + unmapped


def _drop_reason(
    recipe: Recipe,
    method: Method,
    sources: dict[str, ModelSource],
    reference: str,
    layout: ModuleLayout | None,
    model: str,
    name: str,
) -> str | None:
    part, where = recipe, ""
    if layout is not None and recipe.modules is not None:
        module = layout.module_of(name)
        spec = next(s for s in recipe.modules if s.name == module.name)
        if model not in spec.recipe.model_references():
            return f"module {module.name!r} does not take model {model!r}"
        part, method = spec.recipe, get_method(spec.recipe.merge_method)
        where = f" of module {module.name!r}"
    if part.slices:
        layer = parse_layer_name(name)
        if layer is not None:
            return f"layer {layer.index}{where} is not selected by any slice"
        return "embeddings and head are taken from the first and last slices' models"
    if model == part.base_model and method.base is BasePolicy.UNUSED:
        return f"method {method.name!r} does not use the base model's weights"
    if "lm_head" in name and tied_embeddings(sources[reference].config):
        return f"{reference!r} ties the output head to the input embeddings"
    return None
