"""Method contracts the recipe tests rely on, registered for each test.

The recipe module only reads contracts, so the tests pin their own (shaped like mergekit's
ties and slerp) instead of depending on the kernels other modules register.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from alloykit.methods import BasePolicy, Method, Param, Scope
from alloykit.methods import registry as method_registry

NO_KERNELS = __name__
"""Recipe tests never run kernels: this module registers none."""

TEST_METHODS = (
    Method(
        name="ties",
        summary="task-vector merge with sign consensus",
        reference="TIES-Merging, arXiv:2306.01708",
        params=(
            Param("weight", float, Scope.PER_MODEL),
            Param("density", float, Scope.PER_MODEL, 1.0, minimum=0.0, maximum=1.0),
            Param("normalize", bool, Scope.GLOBAL, True),
            Param("int8_mask", bool, Scope.GLOBAL, False),
            Param("lambda", float, Scope.GLOBAL, 1.0),
        ),
        base=BasePolicy.REQUIRED,
        kernel_module=NO_KERNELS,
    ),
    Method(
        name="slerp",
        summary="spherical interpolation of two models",
        reference="Shoemake 1985",
        params=(Param("t", float, Scope.GLOBAL, minimum=0.0, maximum=1.0),),
        base=BasePolicy.REQUIRED,
        kernel_module=NO_KERNELS,
        min_models=1,
        max_models=1,
    ),
    Method(
        name="choosy",
        summary="a contract with a choice and an integer parameter",
        reference="tests",
        params=(
            Param("consensus", str, Scope.GLOBAL, "sum", choices=("sum", "count")),
            Param("k", int, Scope.PER_MODEL, 1, minimum=1),
        ),
        base=BasePolicy.OPTIONAL,
        kernel_module=NO_KERNELS,
        min_models=2,
        max_models=3,
    ),
)


@pytest.fixture(autouse=True)
def registered_test_methods(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for method in TEST_METHODS:
        monkeypatch.setitem(method_registry._REGISTRY, method.name, method)
    yield
