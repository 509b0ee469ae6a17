"""Every registered method declares a complete, self-consistent contract."""

from __future__ import annotations

import inspect

import pytest

from alloykit.methods import REQUIRED, BasePolicy, Scope, all_methods, get_method, method_names

MERGEKIT_METHODS = {
    "linear",
    "passthrough",
    "slerp",
    "nuslerp",
    "multislerp",
    "karcher",
    "task_arithmetic",
    "ties",
    "dare_linear",
    "dare_ties",
    "breadcrumbs",
    "breadcrumbs_ties",
    "della",
    "della_linear",
    "sce",
    "model_stock",
    "nearswap",
    "arcee_fusion",
    "ram",
    "ramplus_tl",
}

METHODS = all_methods()
IDS = [m.name for m in METHODS]


def test_catalog_covers_mergekit_data_free_methods() -> None:
    assert set(method_names()) >= MERGEKIT_METHODS


@pytest.mark.parametrize("method", METHODS, ids=IDS)
def test_summary_and_reference_are_given(method) -> None:
    assert method.summary.strip() and "\n" not in method.summary
    assert method.reference.strip()


@pytest.mark.parametrize("method", METHODS, ids=IDS)
def test_every_parameter_is_documented(method) -> None:
    for param in method.params:
        assert param.doc.strip(), f"{method.name}.{param.name} has no doc"


@pytest.mark.parametrize("method", METHODS, ids=IDS)
def test_defaults_are_valid_values(method) -> None:
    for param in method.params:
        if param.default is not REQUIRED:
            assert param.check(param.default) == param.default, f"{method.name}.{param.name}"
        if param.minimum is not None and param.maximum is not None:
            assert param.minimum <= param.maximum
        if param.choices is not None:
            assert param.type is str and param.scope is Scope.GLOBAL
        if param.scope is Scope.PER_MODEL:
            assert param.type is float, "per-model values reach kernels as float tensors"


@pytest.mark.parametrize("method", METHODS, ids=IDS)
def test_model_counts_are_consistent(method) -> None:
    assert method.min_models >= 1
    assert method.max_models is None or method.max_models >= method.min_models


@pytest.mark.parametrize("method", METHODS, ids=IDS)
def test_kernel_accepts_declared_parameters(method) -> None:
    signature = inspect.signature(method.kernel)
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    names = set(signature.parameters)
    for param in method.params:
        assert accepts_any or param.name in names, f"{method.name} ignores {param.name}"
    assert accepts_any or method.random == ("seed" in names)


@pytest.mark.parametrize(
    ("name", "policy", "min_models", "max_models"),
    [
        ("slerp", BasePolicy.REQUIRED, 1, 1),
        ("nearswap", BasePolicy.REQUIRED, 1, 1),
        ("nuslerp", BasePolicy.OPTIONAL, 2, 2),
        ("multislerp", BasePolicy.OPTIONAL, 1, None),
        ("karcher", BasePolicy.UNUSED, 1, None),
        ("model_stock", BasePolicy.REQUIRED, 2, None),
        ("sce", BasePolicy.REQUIRED, 1, None),
        ("ties", BasePolicy.REQUIRED, 1, None),
        ("ram", BasePolicy.REQUIRED, 1, None),
        ("ramplus_tl", BasePolicy.REQUIRED, 1, None),
        ("arcee_fusion", BasePolicy.REQUIRED, 1, 1),
    ],
)
def test_base_policy_and_counts_follow_mergekit(name, policy, min_models, max_models) -> None:
    method = get_method(name)
    assert (method.base, method.min_models, method.max_models) == (policy, min_models, max_models)


@pytest.mark.parametrize("name", ["dare_linear", "dare_ties", "della", "della_linear"])
def test_random_methods_are_flagged(name) -> None:
    assert get_method(name).random


@pytest.mark.parametrize(
    "name",
    [
        "task_arithmetic",
        "ties",
        "dare_linear",
        "dare_ties",
        "breadcrumbs",
        "breadcrumbs_ties",
        "della",
        "della_linear",
    ],
)
def test_task_vector_methods_accept_mergekit_parameters(name) -> None:
    method = get_method(name)
    for key in ("weight", "density", "normalize", "rescale", "lambda", "int8_mask"):
        assert method.param(key) is not None, f"{name} lacks {key}"


@pytest.mark.parametrize(
    ("name", "normalize", "rescale"),
    [
        ("task_arithmetic", False, False),
        ("ties", True, False),
        ("dare_linear", False, True),
        ("dare_ties", False, True),
        ("breadcrumbs", False, False),
        ("breadcrumbs_ties", False, False),
        ("della", True, True),
        ("della_linear", False, True),
    ],
)
def test_task_vector_defaults_match_mergekit(name, normalize, rescale) -> None:
    method = get_method(name)
    assert method.param("normalize").default is normalize
    assert method.param("rescale").default is rescale
    assert method.param("lambda").default == 1.0
    assert method.param("density").default == 1.0


def test_sign_rule_accepts_both_spellings() -> None:
    choices = get_method("ties").param("consensus_method").choices
    assert {"total", "frequency", "sum", "count"} <= set(choices)


@pytest.mark.parametrize("method", METHODS, ids=IDS)
def test_deliberate_differences_are_noted(method) -> None:
    rescale_mode = method.param("rescale_mode")
    if rescale_mode is not None and rescale_mode.default == "keep_rate":
        assert "mergekit" in method.notes
