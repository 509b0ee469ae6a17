"""The statistics inputs a method declares (Gram matrices, Fisher diagonals): each model's
file opened by its header, and each output tensor's statistics mapped like its other inputs
(docs/engine.md, "Statistics inputs")."""

from __future__ import annotations

from alloykit.checkpoint.source import ModelSource
from alloykit.checkpoint.statistics import StatisticsFile, open_statistics, statistic_key
from alloykit.errors import PlanError
from alloykit.methods import Method
from alloykit.plan import PlanOptions, TensorRef
from alloykit.recipe.model import Recipe


def open_statistics_files(
    recipe: Recipe, method: Method, options: PlanOptions, sources: dict[str, ModelSource]
) -> dict[str, StatisticsFile]:
    """Each listed model's statistics file, when the method takes statistics (and every
    model's file holds every statistic it declares)."""
    declared = method.statistics
    if not declared or recipe.modules:
        return {}
    names = ", ".join(s.name for s in declared)
    if recipe.models is None:
        raise PlanError(
            f"slices: method {method.name!r} takes statistics ({names}), which are given per model",
            "use models: with a statistics: file on each model",
        )
    opened: dict[str, StatisticsFile] = {}
    for entry in recipe.models:
        if entry.model in opened:
            continue
        path = options.statistics.get(entry.model) or entry.statistics
        if path is None:
            where = f"{entry.key_path}.data" if entry.data is not None else entry.key_path
            raise PlanError(
                f"{where}: method {method.name!r} needs statistics ({names}) of model "
                f"{entry.model!r}, and none were given or computed",
                f"add statistics: FILE to {entry.key_path} (see `alloykit calibrate`)",
            )
        where = f"{entry.key_path}.statistics"
        path = recipe.resolve_path(path)
        found = open_statistics(path, sources[entry.model], where)
        for statistic in declared:
            if statistic.name not in found.kinds():
                raise PlanError(
                    f"{where}: {found.path} holds no {statistic.name!r} statistics "
                    f"(keys {statistic.name}:TENSOR), which method {method.name!r} needs",
                    "compute them with `alloykit calibrate`",
                )
        opened[entry.model] = found
    return opened


def statistics_of(
    method: Method,
    statistics: dict[str, StatisticsFile],
    sources: dict[str, ModelSource],
    out_name: str,
    refs: list[TensorRef],
    *,
    rows_differ: bool,
) -> dict[str, tuple[TensorRef | None, ...]]:
    """Each declared statistic of the models' tensors ``refs``: all of them, or none.
    ``rows_differ``: the models' rows of this tensor are not the output's (vocabularies
    differ), so no statistic of theirs applies."""
    mapped: dict[str, tuple[TensorRef | None, ...]] = {}
    for statistic in method.statistics:
        found: list[TensorRef | None] = []
        for ref in refs:
            if ref.model not in statistics:
                raise PlanError(
                    f"tensor {out_name!r}: model {ref.model!r} has no statistics file, and "
                    f"method {method.name!r} needs its {statistic.name!r} statistics",
                    "list the model under models: with statistics: FILE",
                )
            key = statistic_key(statistic.name, ref.name)
            stats = statistics[ref.model]
            entry = stats.entries.get(key)
            if entry is not None:
                shape = sources[ref.model].tensors[ref.name].shape
                expected = statistic.shape.of(shape)
                if entry.shape != expected:
                    want = "none" if expected is None else str(list(expected))
                    raise PlanError(
                        f"statistics file {stats.path}: {key!r} has shape "
                        f"{list(entry.shape)}, expected {want} for tensor {ref.name!r} "
                        f"of shape {list(shape)}",
                        "the file was computed on another architecture; recompute it",
                    )
            found.append(None if entry is None else TensorRef(ref.model, key))
        present = [ref for ref in found if ref is not None]
        if present and len(present) < len(found):
            missing = refs[found.index(None)]
            have = present[0].model
            raise PlanError(
                f"tensor {out_name!r}: statistics file {statistics[missing.model].path} "
                f"of model {missing.model!r} has no "
                f"{statistic_key(statistic.name, missing.name)!r}, which model {have!r}'s has",
                "compute every model's statistics with the same settings and data",
            )
        if present and rows_differ:
            raise PlanError(
                f"tensor {out_name!r}: the models' vocabularies differ and method "
                f"{method.name!r} takes {statistic.name!r} statistics of it",
                "merge models with the same vocabulary",
            )
        mapped[statistic.name] = tuple(found)
    return mapped
