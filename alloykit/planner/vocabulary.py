"""The output vocabulary a recipe's ``tokenizer:`` asks for, and the vocabulary tensors laid
out in it (derived sources, see :mod:`alloykit.vocab`)."""

from __future__ import annotations

from alloykit.arch.layers import sort_key
from alloykit.arch.vocab import is_vocab_tensor
from alloykit.checkpoint.derived import DerivedSource
from alloykit.checkpoint.source import ModelSource, locate
from alloykit.plan import TensorRef
from alloykit.recipe.model import Recipe
from alloykit.vocab.plan import VocabularyPlan, plan_vocabulary
from alloykit.vocab.source import add_vocab_tensor


def plan_output_vocabulary(
    recipe: Recipe, sources: dict[str, ModelSource], reference: str
) -> VocabularyPlan | None:
    """The output vocabulary when the recipe names a tokenizer (see :mod:`alloykit.vocab`)."""
    settings = recipe.tokenizer
    if settings is None:
        return None
    rows = {ref: vocab_rows(source) for ref, source in sources.items()}
    models = [ref for ref, count in rows.items() if count is not None]
    if not models:
        return None
    base = recipe.base_model or reference
    named = base if settings.source in ("base", "union") else settings.source
    if named in sources:
        root = sources[named].root
    else:
        search = (recipe.source_file.parent,) if recipe.source_file else ()
        root = locate(named, search)
        root = root if root.is_dir() else root.parent
    return plan_vocabulary(
        settings,
        roots={m: sources[m].root for m in models},
        configs={m: sources[m].config for m in models},
        row_counts={m: rows[m] for m in models if rows[m] is not None},
        base=base if base in models else models[0],
        source_root=root,
        source_reference=named,
    )


def in_output_vocabulary(
    vocabulary: VocabularyPlan | None,
    sources: dict[str, ModelSource],
    out_name: str,
    refs: list[TensorRef],
) -> bool:
    """Whether the tensor has one row per token of the models' vocabularies."""
    if vocabulary is None:
        return False
    for ref in refs:
        meta = sources[ref.model].tensors[ref.name]
        count = vocabulary.row_counts.get(ref.model)
        if not is_vocab_tensor(out_name, meta.shape) or meta.shape[0] != count:
            return False
    return True


def relaid(
    vocabulary: VocabularyPlan,
    derived: dict[str, DerivedSource],
    sources: dict[str, ModelSource],
    base: str | None,
    out_name: str,
    refs: list[TensorRef],
    base_ref: TensorRef | None,
) -> tuple[list[TensorRef], TensorRef | None]:
    """The inputs of ``out_name`` laid out in the output vocabulary (derived tensors, added
    to ``derived``); ``base`` is the base model of the slice being planned."""
    everyone = [*refs, *([base_ref] if base_ref else [])]
    models = list(dict.fromkeys(r.model for r in everyone))
    layout = vocabulary.layout(models, base if base in models else None)
    inputs = {r.model: r.name for r in everyone}
    made = add_vocab_tensor(derived, sources, out_name, inputs, layout)
    laid_out = [TensorRef(made[r.model], out_name) for r in refs]
    base_laid_out = TensorRef(made[base_ref.model], out_name) if base_ref else None
    return laid_out, base_laid_out


def vocab_rows(source: ModelSource) -> int | None:
    """Rows of the model's first vocabulary tensor (its input embeddings), if it has one."""
    for name in sorted(source.tensors, key=sort_key):
        meta = source.tensors[name]
        if is_vocab_tensor(name, meta.shape):
            return meta.shape[0]
    return None
