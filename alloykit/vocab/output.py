"""The output model's tokenizer files: copied from the tokenizer source, or written when the
output vocabulary has tokens the source lacks (``union``, ``tokenizer.tokens``)."""

from __future__ import annotations

from pathlib import Path

from alloykit.checkpoint.model_files import copy_tokenizer
from alloykit.checkpoint.source import locate
from alloykit.plan import Plan
from alloykit.vocab.tokenizer_files import write_extended


def write_tokenizer(plan: Plan, directory: Path) -> None:
    """Put the plan's output tokenizer into ``directory``."""
    vocabulary = plan.vocabulary
    if vocabulary is not None and vocabulary.tokenizer is not None:
        write_extended(vocabulary.tokenizer, vocabulary.template, directory)
        return
    if vocabulary is not None:
        copy_tokenizer(vocabulary.template, directory)
        return
    reference = plan.tokenizer_source or plan.reference
    if reference in plan.sources:
        copy_tokenizer(plan.sources[reference], directory)
        return
    recipe = plan.recipe
    root = locate(reference, (recipe.source_file.parent,) if recipe.source_file else ())
    copy_tokenizer(root if root.is_dir() else root.parent, directory)
