"""Model references: mergekit's string and dict forms → one string, ``org/name[@revision]``."""

from __future__ import annotations

from typing import Any

from alloykit.recipe.document import fail

_MODEL_PATH_KEYS = ("path", "revision")
_REFERENCE_KEYS = ("model", "lora", "override_architecture")


def parse_reference(raw: Any, path: str) -> str:
    """A model reference as one string: ``org/name``, ``./dir`` or ``org/name@revision``.

    mergekit's dict forms ``{model: {path: X, revision: R}}`` and ``{path: X}`` are accepted.
    A LoRA adapter applied to the model is written ``model+adapter`` (mergekit's string form;
    its dict form ``{model: X, lora: Y}`` gives the same string).
    """
    if isinstance(raw, dict):
        text = _reference_from_dict(raw, path)
    elif isinstance(raw, str):
        text = raw
    else:
        fail(path, f"expected a model reference (a path or Hugging Face id), got {raw!r}")
    if not text:
        fail(path, "empty model reference", "give a local path or a Hugging Face id")
    parts = text.split("+")
    if len(parts) > 2 or not all(parts):
        fail(path, f"expected MODEL or MODEL+ADAPTER, got '{text}'", "e.g. org/base+org/adapter")
    if any(part.count("@") > 1 for part in parts):
        fail(path, f"more than one '@revision' in '{text}'", "use MODEL or MODEL@REVISION")
    return text


def _reference_from_dict(raw: dict[str, Any], path: str) -> str:
    if "model" not in raw:
        return _model_path(raw, path)
    for key in raw:
        if key not in _REFERENCE_KEYS:
            fail(f"{path}.{key}", "unknown key", f"allowed here: {', '.join(_REFERENCE_KEYS)}")
    if raw.get("override_architecture") is not None:
        fail(
            f"{path}.override_architecture",
            "is not supported yet",
            "remove it; the architecture is read from the model's config.json",
        )
    model = _model_path(raw["model"], f"{path}.model")
    if raw.get("lora") is None:
        return model
    return f"{model}+{_model_path(raw['lora'], f'{path}.lora')}"


def _model_path(raw: Any, path: str) -> str:
    if isinstance(raw, str):
        return raw
    if not isinstance(raw, dict):
        fail(path, f"expected a model reference (a path or Hugging Face id), got {raw!r}")
    for key in raw:
        if key not in _MODEL_PATH_KEYS:
            fail(f"{path}.{key}", "unknown key", f"allowed here: {', '.join(_MODEL_PATH_KEYS)}")
    location, revision = raw.get("path"), raw.get("revision")
    if not isinstance(location, str):
        fail(f"{path}.path", f"expected a path or Hugging Face id, got {location!r}")
    if revision is None:
        return location
    if not isinstance(revision, str):
        fail(f"{path}.revision", f"expected a branch, tag or commit, got {revision!r}")
    return f"{location}@{revision}"
