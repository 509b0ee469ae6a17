"""The choices of the shared task-vector steps: how to sparsify, elect signs and rescale.

They are plain enums, apart from :mod:`alloykit.methods.steps` (torch), because method
contracts name them: the accepted ``consensus_method`` and ``rescale_mode`` values and each
task-vector method's settings (:mod:`alloykit.methods.task_vector_settings`) are read without
importing torch.
"""

from __future__ import annotations

from enum import Enum


class Sparsification(str, Enum):
    """How a task vector is thinned before merging."""

    MAGNITUDE = "magnitude"
    RANDOM = "random"
    BREADCRUMBS = "breadcrumbs"
    DELLA = "della"


class SignRule(str, Enum):
    """How TIES elects the sign of each parameter."""

    TOTAL = "total"
    FREQUENCY = "frequency"


SIGN_RULE_ALIASES: dict[str, SignRule] = {
    "total": SignRule.TOTAL,
    "frequency": SignRule.FREQUENCY,
    "sum": SignRule.TOTAL,
    "count": SignRule.FREQUENCY,
}
"""Accepted spellings: ours and mergekit's (``sum`` / ``count``)."""


class RescaleMode(str, Enum):
    """How the surviving entries of a sparsified task vector are scaled back up."""

    KEEP_RATE = "keep_rate"
    L1 = "l1"
