"""The check that a written model loads: config.json and the tensors agree.

A config that keeps an old layer count (a nested ``text_config``, T5's ``num_decoder_layers``)
makes transformers drop the extra layers silently, or leave layers randomly initialised. Before
an output is committed, its architecture is instantiated on the meta device from the written
config (no weights are allocated or read) and transformers' own loading report must show no
missing, unexpected or mismatched key. Configs whose architecture transformers does not know,
or that need a repository's code (``auto_map``), are not checked: alloykit never runs such code.
An output with the same tensors (names and shapes) and config (dtype aside) as its reference
model loads as that model does, so it needs no check, and its merge no torch import.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alloykit.checkpoint.transformers_loading import local_load_options
from alloykit.errors import OutputMismatchError
from alloykit.plan import Plan

_SHOWN = 3
_DTYPE_KEYS = ("torch_dtype", "dtype")


def changes_layout(plan: Plan) -> bool:
    """Whether the output differs from its reference model in tensors, shapes or config."""
    reference = plan.sources[plan.reference]
    written = {(entry.name, tuple(entry.shape)) for entry in plan.entries}
    own = {(meta.name, tuple(meta.shape)) for meta in reference.tensors.values()}
    return written != own or _without_dtype(plan.config) != _without_dtype(reference.config)


def _without_dtype(config: dict) -> dict:
    stripped = {k: v for k, v in config.items() if k not in _DTYPE_KEYS}
    for key, value in stripped.items():
        if isinstance(value, dict):
            stripped[key] = _without_dtype(value)
    return stripped


def check_loads(directory: Path) -> None:
    """Raise :class:`OutputMismatchError` naming the keys transformers would not load."""
    config = json.loads((directory / "config.json").read_text())
    architectures = config.get("architectures") or []
    if not architectures or config.get("auto_map"):
        return
    import transformers

    model_class = getattr(transformers, architectures[0], None)
    if model_class is None or not hasattr(model_class, "from_pretrained"):
        return
    with _quiet_transformers():
        _, report = model_class.from_pretrained(
            directory, output_loading_info=True, device_map="meta", **local_load_options()
        )
    problems = [
        _describe(kind, [str(key[0] if isinstance(key, tuple) else key) for key in report[field]])
        for kind, field in (
            ("missing", "missing_keys"),
            ("unexpected", "unexpected_keys"),
            ("of the wrong shape", "mismatched_keys"),
        )
        if report.get(field)
    ]
    if problems:
        raise OutputMismatchError(
            f"the output's config.json and tensors disagree for {architectures[0]}: "
            + "; ".join(problems),
            "this is an alloykit defect: please report it with the recipe (the output was not "
            "committed; --no-check-loads writes it anyway)",
        )


def _describe(kind: str, keys: list[str]) -> str:
    keys = sorted(keys)
    more = f" and {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else ""
    return f"{len(keys)} {kind} ({', '.join(keys[:_SHOWN])}{more})"


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers' load report and progress bar off for the check, then as they were."""
    from transformers.utils import logging

    verbosity = logging.get_verbosity()
    bars = logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()
