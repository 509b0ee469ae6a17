"""The search spec: a mergekit-format recipe whose parameters may be ranges, the tasks that
score candidates, and how to search.

    recipe:                     # a recipe (mapping or path); {min, max} marks a searched value
      merge_method: task_arithmetic
      base_model: examples/zoo/base
      models:
        - model: examples/zoo/experts/sort
          parameters: {weight: {min: 0, max: 1.5}}
    tasks: [examples/zoo/tasks/sort]   # or lm_eval:NAME, with lm_eval_include: FOLDER
    optimizer: cma              # cma | sep_cma | gp | nsga2 | tpe | random
    trials: 200

Validated with pydantic here, at the edge; everything after works on :class:`SearchSpec`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from alloykit.errors import AlloyError
from alloykit.search.optimizers import SINGLE_OBJECTIVE


class SpecError(AlloyError):
    """A search spec that cannot be run as written."""


class FitnessSpec(BaseModel):
    """How a candidate is scored on each task's ``split``."""

    model_config = ConfigDict(extra="forbid")

    estimator: Literal["full", "subset", "irt"] = "full"
    subset: float = Field(0.1, gt=0, le=1)
    """Fraction of each task's examples a candidate is run on (subset and irt)."""
    calibration: int = Field(8, ge=0)
    """irt: candidates drawn at random from the space and run on every example before the
    search; their responses join the endpoints' in the fit of the item parameters. The
    endpoints alone answer all or nothing on a task (an expert knows its skill, the others do
    not), which says little about which items a merge gets right."""
    split: str = "validation"
    limit: int | None = Field(None, ge=1)
    """At most this many examples of each task (the first ones), before any subset."""
    batch_size: int = Field(64, ge=1)
    strategy: Literal["forced", "generate"] = "forced"
    """How generation tasks' exact match is scored (:func:`alloykit.evaluate.answer_hits`):
    the same verdicts either way, so it is not part of the spec's fingerprint."""


class SearchSpec(BaseModel):
    """A validated search spec (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    recipe: dict[str, Any]
    tasks: list[str] = Field(min_length=1)
    """Task directories or task YAML files (``alloykit eval``'s), or ``lm_eval:NAME`` for an
    lm-evaluation-harness task (found in ``lm_eval_include``)."""
    lm_eval_include: str | None = None
    """A folder of lm-eval task YAML files for the ``lm_eval:`` tasks; without it, lm-eval's
    built-in tasks (whose data lm-eval must be able to load)."""
    methods: list[str] | None = None
    """Merge methods to choose among (a searched choice); default: the recipe's own."""
    layer_groups: int = Field(1, ge=1, le=64)
    """Each searched value gets this many genes over the depth (a gradient of anchors)."""
    filters: list[str] = Field(default_factory=list)
    """Tensor-name filters (e.g. self_attn, mlp) that get genes of their own."""
    objective: Literal["mean", "per_task"] = "mean"
    optimizer: Literal["cma", "sep_cma", "nsga2", "tpe", "gp", "random"] = "cma"
    trials: int = Field(100, ge=1)
    population: int | None = Field(None, ge=2)
    """Candidates asked for at once (cma, sep_cma, nsga2); default: the optimizer's own."""
    fitness: FitnessSpec = Field(default_factory=FitnessSpec)
    test_split: str = "test"
    seed: int = 0
    base_dir: Path = Field(default=Path("."), exclude=True)
    """Where relative paths in the spec are resolved from (the spec file's folder)."""

    @model_validator(mode="after")
    def _checked(self) -> SearchSpec:
        if self.objective == "per_task" and self.optimizer in SINGLE_OBJECTIVE:
            raise ValueError(
                "objective per_task needs a multi-objective optimizer: use optimizer: nsga2 "
                "(or tpe), or objective: mean"
            )
        if self.methods is not None and not self.methods:
            raise ValueError("methods: give at least one merge method, or leave it out")
        return self

    def fingerprint(self) -> str:
        """Identifies what the trials of a search depend on: a journal written under another
        spec is refused rather than mixed in."""
        data = self.model_dump(
            mode="json", exclude={"trials": True, "base_dir": True, "fitness": {"strategy"}}
        )
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    def path(self, raw: str) -> Path:
        """A path from the spec, relative to the spec's folder."""
        path = Path(raw).expanduser()
        return path if path.is_absolute() else self.base_dir / path


def load_spec(source: str | Path | dict[str, Any]) -> SearchSpec:
    """A :class:`SearchSpec` from a YAML file or a mapping; bad input is one :class:`SpecError`
    line naming the key."""
    base_dir = Path(".")
    if isinstance(source, dict):
        raw = source
    else:
        path = Path(source)
        try:
            raw = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise SpecError(f"search spec {str(path)!r} not found", "give a YAML file") from None
        except yaml.YAMLError as exc:
            raise SpecError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        base_dir = path.parent
    if not isinstance(raw, dict):
        raise SpecError("a search spec is a mapping with recipe:, tasks: and settings")
    raw = dict(raw)
    recipe = raw.get("recipe")
    if isinstance(recipe, str):
        recipe_path = Path(recipe) if Path(recipe).is_absolute() else base_dir / recipe
        try:
            raw["recipe"] = yaml.safe_load(recipe_path.read_text())
        except OSError:
            raise SpecError(
                f"recipe: {str(recipe_path)!r} not found", "give a recipe file or mapping"
            ) from None
    try:
        return SearchSpec.model_validate({**raw, "base_dir": base_dir})
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "spec"
        raise SpecError(
            f"search spec: {where}: {error['msg']}", "see docs/search.md for the spec's keys"
        ) from None
