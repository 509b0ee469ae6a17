"""``alloykit search``: evolve merge recipes automatically.

A spec (:mod:`.spec`) marks the recipe values to search; an optimizer (:mod:`.optimizers`:
CMA-ES, NSGA-II, TPE, random) proposes candidates; workers (:mod:`.workers`: this process,
local processes, or a Ray cluster) merge each candidate in memory into a resident model and
score it on the user's tasks, on the whole validation split or on a subset extrapolated by
item response theory (:mod:`.fitness`, :mod:`.irt`); every candidate is journaled
(:mod:`.journal`) so a stopped search resumes; the best recipe and its held-out scores are
written out (:mod:`.report`).
"""

from __future__ import annotations

from alloykit.search.run import SearchResult, run_search
from alloykit.search.spec import SearchSpec, SpecError, load_spec

__all__ = ["SearchResult", "SearchSpec", "SpecError", "load_spec", "run_search"]
