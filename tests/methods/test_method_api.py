"""The public method API: a decorated function becomes a merge method that recipes, the CLI
and the engine use like a built-in one; installed packages add methods by entry points."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Literal

import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner
from user_methods import docs_example, install_plugin, isolated_registry, write_module

import alloykit
from alloykit import BasePolicy, Param, PerModel, Range, Scope
from alloykit.cli import app
from alloykit.errors import MethodDefinitionError
from alloykit.methods import get_method, method_names
from alloykit.methods.define import method_of

runner = CliRunner()


@pytest.fixture(autouse=True)
def registry_restored():
    with isolated_registry():
        yield


def load_model(directory: Path) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for shard in sorted(directory.glob("*.safetensors")):
        tensors.update(load_file(shard))
    return tensors


def trimmed_task_sum_by_hand(
    models: list[dict[str, torch.Tensor]],
    base: dict[str, torch.Tensor],
    weights: list[float],
    threshold: float,
    scale: float,
) -> dict[str, torch.Tensor]:
    """The docs example's definition, computed tensor by tensor with plain torch."""
    out = {}
    for name, b in base.items():
        total = torch.zeros_like(b, dtype=torch.float32)
        for model, w in zip(models, weights, strict=True):
            delta = model[name].float() - b.float()
            total += torch.tensor(w, dtype=torch.float32) * torch.where(
                delta.abs() >= threshold, delta, torch.zeros_like(delta)
            )
        out[name] = b.float() + scale * total
    return out


def docs_recipe(llama: dict[str, Path]) -> dict:
    return {
        "merge_method": "trimmed_task_sum",
        "base_model": str(llama["base"]),
        "models": [
            {"model": str(llama["ft1"]), "parameters": {"weight": 0.7}},
            {"model": str(llama["ft2"]), "parameters": {"weight": 0.5}},
        ],
        "parameters": {"threshold": 0.001, "scale": 1.5},
        "dtype": "float32",
    }


# -- from signature to contract -------------------------------------------------------------


def test_the_signature_declares_scopes_defaults_ranges_choices_and_docs():
    def kernel(
        tensors: torch.Tensor,
        base: torch.Tensor | None,
        *,
        weight: PerModel[float] = 1.0,
        gain: torch.Tensor = 2.0,
        density: Annotated[float, Range(0, 1), "fraction kept"],
        steps: int = 3,
        rescale: bool = True,
        mode: Literal["sum", "mean"] = "mean",
    ) -> torch.Tensor:
        """Combine the models somehow."""
        return tensors[0]

    method, _ = method_of(kernel, name="somehow", reference="ref")
    params = {p.name: p for p in method.params}
    assert (params["weight"].scope, params["weight"].type, params["weight"].default) == (
        Scope.PER_MODEL,
        float,
        1.0,
    )
    assert params["gain"].scope is Scope.PER_MODEL
    assert params["density"].required
    assert (params["density"].minimum, params["density"].maximum) == (0, 1)
    assert params["density"].doc == "fraction kept"
    assert (params["steps"].type, params["steps"].scope) == (int, Scope.GLOBAL)
    assert params["rescale"].type is bool
    assert params["mode"].choices == ("sum", "mean")
    assert method.summary == "Combine the models somehow."
    assert method.base is BasePolicy.OPTIONAL
    assert not method.random and not method.streams


def test_base_policy_follows_the_base_parameter():
    def required(tensors: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        """r"""

    def unused(tensors: torch.Tensor) -> torch.Tensor:
        """u"""

    assert method_of(required)[0].base is BasePolicy.REQUIRED
    assert method_of(unused)[0].base is BasePolicy.UNUSED


def test_a_seed_parameter_makes_the_method_random():
    def noisy(tensors: torch.Tensor, *, seed: int) -> torch.Tensor:
        """n"""

    method, _ = method_of(noisy)
    assert method.random
    assert method.params == ()


def test_streaming_forms_stream_and_whole_does_not():
    def f(tensors: torch.Tensor) -> torch.Tensor:
        """f"""

    assert method_of(f, form="elementwise")[0].streams
    assert method_of(f, form="rows")[0].streams
    assert not method_of(f, form="whole")[0].streams


def test_explicit_params_replace_those_read_from_the_signature():
    def f(tensors: torch.Tensor, *, alpha: float = 0.5) -> torch.Tensor:
        """f"""

    explicit = Param("alpha", float, Scope.PER_MODEL, minimum=0.0, doc="per model")
    method, _ = method_of(f, params=[explicit])
    (alpha,) = method.params
    assert (alpha.scope, alpha.minimum, alpha.default) == (Scope.PER_MODEL, 0.0, 0.5)


def test_a_kernel_without_base_is_called_as_the_engine_calls_kernels():
    def first(tensors: torch.Tensor, *, k: float = 2.0) -> torch.Tensor:
        """f"""
        return tensors[0] * k

    _, kernel = method_of(first)
    assert torch.equal(kernel(torch.ones(2, 3), None, k=3.0), torch.full((3,), 3.0))


# -- bad declarations -----------------------------------------------------------------------


def declare(function, **options):
    alloykit.merge_method(**options)(function)


def test_the_name_of_a_built_in_method_is_refused():
    def linear(tensors: torch.Tensor) -> torch.Tensor:
        """mine"""

    with pytest.raises(MethodDefinitionError, match=r"'linear'.*built-in"):
        declare(linear)
    assert get_method("linear").kernel_module == "alloykit.methods.linear"


def test_defining_a_name_twice_is_refused():
    def twice(tensors: torch.Tensor) -> torch.Tensor:
        """once"""

    declare(twice)
    with pytest.raises(MethodDefinitionError, match=r"'twice' .*already defined"):
        declare(twice)


@pytest.mark.parametrize(
    ("annotation", "message"),
    [
        ("str", "unsupported annotation str"),
        ("list[float]", "unsupported annotation"),
        ("PerModel[int]", "per-model parameters are numbers"),
        ("Annotated[bool, Range(0, 1)]", "Range applies to numbers only"),
        ("Literal[1, 2]", "Literal choices must be strings"),
    ],
)
def test_an_unsupported_annotation_is_refused_naming_the_parameter(annotation, message, tmp_path):
    source = f"""
        from typing import Annotated, Literal
        import torch
        from alloykit import PerModel, Range

        def odd(tensors: torch.Tensor, *, x: {annotation}) -> torch.Tensor:
            "odd"
        """
    write_module(tmp_path, "odd_module", source)
    sys.path.insert(0, str(tmp_path))
    import odd_module

    with pytest.raises(MethodDefinitionError, match=f"parameter 'x'.*{message}"):
        declare(odd_module.odd)


def test_a_parameter_without_annotation_is_refused():
    def bare(tensors: torch.Tensor, *, x=1.0) -> torch.Tensor:
        """bare"""

    with pytest.raises(MethodDefinitionError, match="parameter 'x' has no annotation"):
        declare(bare)


def test_a_default_outside_its_range_is_refused():
    def f(tensors: torch.Tensor, *, x: Annotated[float, Range(0, 1)] = 2.0) -> torch.Tensor:
        """f"""

    with pytest.raises(MethodDefinitionError, match="default does not fit"):
        declare(f)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"name": "Bad-Name"}, "invalid name"),
        ({"form": "chunks"}, "unknown form"),
        ({"base": "always"}, "unknown base policy"),
        ({"base": "required"}, "takes no 'base' parameter"),
        ({"min_models": 0}, "model counts"),
        ({"params": [Param("y", float, Scope.GLOBAL)]}, "declares y"),
        ({"summary": ""}, "no summary"),
    ],
)
def test_bad_decorator_arguments_are_refused(options, message):
    def f(tensors: torch.Tensor) -> torch.Tensor:
        return tensors[0]

    with pytest.raises(MethodDefinitionError, match=message):
        declare(f, **options)


def test_variadic_parameters_are_refused():
    def f(tensors: torch.Tensor, **params: float) -> torch.Tensor:
        """f"""

    with pytest.raises(MethodDefinitionError, match=r"\*params"):
        declare(f)


# -- a module outside the package, through recipes and the CLI ------------------------------


def test_the_docs_example_merges_through_a_recipe(llama, tmp_path):
    write_module(tmp_path / "site", "docs_methods", docs_example())
    sys.path.insert(0, str(tmp_path / "site"))
    import docs_methods  # noqa: F401

    merged = alloykit.merge_to_state_dict(docs_recipe(llama))
    expected = trimmed_task_sum_by_hand(
        [load_model(llama["ft1"]), load_model(llama["ft2"])],
        load_model(llama["base"]),
        [0.7, 0.5],
        threshold=0.001,
        scale=1.5,
    )
    assert merged.keys() == expected.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(merged[name], tensor, rtol=0, atol=1e-6)


def test_an_elementwise_method_gives_the_same_result_in_any_chunking(llama, tmp_path):
    write_module(tmp_path, "docs_methods", docs_example())
    sys.path.insert(0, str(tmp_path))
    import docs_methods  # noqa: F401

    whole = alloykit.merge_to_state_dict(docs_recipe(llama))
    chunked = alloykit.merge_to_state_dict(docs_recipe(llama), chunk_elements=40, threads=3)
    for name, tensor in whole.items():
        assert torch.equal(chunked[name], tensor), name


def test_a_whole_tensor_method_gets_each_tensor_whole(llama, tmp_path):
    write_module(tmp_path, "docs_methods", docs_example())
    sys.path.insert(0, str(tmp_path))
    import docs_methods

    recipe = {
        "merge_method": "norm_matched_mean",
        "models": [{"model": str(llama["ft1"])}, {"model": str(llama["ft2"])}],
    }
    merged = alloykit.merge_to_state_dict(recipe, chunk_elements=40)
    models = [load_model(llama["ft1"]), load_model(llama["ft2"])]
    for name, tensor in merged.items():
        stacked = torch.stack([m[name].float() for m in models])
        torch.testing.assert_close(tensor, docs_methods.norm_matched_mean(stacked), rtol=0, atol=0)


def test_a_random_method_gets_a_seed_that_depends_on_the_recipe_seed(llama, tmp_path):
    source = """
        import torch
        import alloykit

        @alloykit.merge_method(form="elementwise")
        def coin(tensors: torch.Tensor, *, seed: int) -> torch.Tensor:
            "Pick a model per tensor at random."
            generator = torch.Generator().manual_seed(seed)
            pick = int(torch.randint(tensors.shape[0], (), generator=generator))
            return tensors[pick]
        """
    write_module(tmp_path, "coin_methods", source)
    sys.path.insert(0, str(tmp_path))
    import coin_methods  # noqa: F401

    recipe = {"merge_method": "coin", "models": [{"model": str(llama[f"ft{i}"])} for i in (1, 2)]}
    first = alloykit.merge_to_state_dict(recipe, seed=1)
    again = alloykit.merge_to_state_dict(recipe, seed=1, threads=1)
    other = alloykit.merge_to_state_dict(recipe, seed=2)
    assert all(torch.equal(first[n], again[n]) for n in first)
    assert any(not torch.equal(first[n], other[n]) for n in first)


def test_recipes_validate_user_parameters_against_the_declared_range(llama, tmp_path):
    write_module(tmp_path, "docs_methods", docs_example())
    sys.path.insert(0, str(tmp_path))
    import docs_methods  # noqa: F401

    recipe = docs_recipe(llama)
    recipe["parameters"]["scale"] = 11
    with pytest.raises(alloykit.errors.RecipeError, match="scale"):
        alloykit.load_recipe(recipe)


def test_the_cli_lists_describes_and_merges_with_a_user_method(llama, tmp_path):
    write_module(tmp_path, "docs_methods", docs_example())
    sys.path.insert(0, str(tmp_path))
    import docs_methods  # noqa: F401

    listing = runner.invoke(app, ["methods"], terminal_width=200)
    assert listing.exit_code == 0 and "trimmed_task_sum" in listing.output
    described = runner.invoke(app, ["methods", "trimmed_task_sum"], terminal_width=200)
    assert described.exit_code == 0
    assert "threshold" in described.output and "number in [0, 10]" in described.output
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(docs_recipe(llama)))
    result = runner.invoke(app, ["merge", str(recipe), str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    expected = alloykit.merge_to_state_dict(docs_recipe(llama))
    written = load_model(tmp_path / "out")
    assert all(torch.equal(written[n], expected[n]) for n in expected)


# -- entry points ---------------------------------------------------------------------------


def test_an_installed_plugin_adds_its_methods_when_a_name_is_looked_up(llama, tmp_path):
    site = tmp_path / "site"
    write_module(site, "example_plugin_methods", docs_example())
    install_plugin(site, "example-plugin", {"examples": "example_plugin_methods"})

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(docs_recipe(llama)))
    result = runner.invoke(app, ["merge", str(recipe), str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert get_method("trimmed_task_sum").kernel_module == "example_plugin_methods"


def test_plugins_are_listed_by_the_methods_command(tmp_path):
    site = tmp_path / "site"
    write_module(site, "example_plugin_methods", docs_example())
    install_plugin(site, "example-plugin", {"examples": "example_plugin_methods"})

    listing = runner.invoke(app, ["methods"], terminal_width=200)
    assert listing.exit_code == 0 and "trimmed_task_sum" in listing.output
    described = runner.invoke(app, ["methods", "norm_matched_mean"], terminal_width=200)
    assert described.exit_code == 0 and "needs whole tensors" in described.output


def test_a_merge_with_a_built_in_method_does_not_import_plugins(tmp_path):
    site = tmp_path / "site"
    write_module(site, "example_plugin_methods", docs_example())
    install_plugin(site, "example-plugin", {"examples": "example_plugin_methods"})
    get_method("ties")
    assert "example_plugin_methods" not in sys.modules


def test_a_broken_plugin_costs_one_warning_naming_its_distribution(tmp_path, caplog):
    site = tmp_path / "site"
    write_module(site, "broken_methods", "raise ImportError('needs numpy 9')\n")
    write_module(site, "working_methods", docs_example())
    install_plugin(site, "broken-plugin", {"broken": "broken_methods"})
    install_plugin(site, "working-plugin", {"working": "working_methods"})

    with caplog.at_level(logging.WARNING, logger="alloykit"):
        names = method_names()
    assert "trimmed_task_sum" in names and "linear" in names
    (record,) = caplog.records
    message = record.getMessage()
    assert "broken-plugin" in message and "needs numpy 9" in message
    assert "\n" not in message


def test_a_plugin_reusing_a_built_in_name_is_skipped_with_a_warning(tmp_path, caplog):
    site = tmp_path / "site"
    source = """
        import torch
        import alloykit

        @alloykit.merge_method()
        def ties(tensors: torch.Tensor) -> torch.Tensor:
            "Not the real TIES."
            return tensors[0]
        """
    write_module(site, "clashing_methods", source)
    install_plugin(site, "clashing-plugin", {"clash": "clashing_methods"})

    with caplog.at_level(logging.WARNING, logger="alloykit"):
        method_names()
    assert "clashing-plugin" in caplog.text and "built-in" in caplog.text
    assert get_method("ties").kernel_module == "alloykit.methods.task_vectors"


def test_plugins_are_loaded_once(tmp_path):
    site = tmp_path / "site"
    counting = docs_example() + "\nLOADS = globals().get('LOADS', 0) + 1\n"
    write_module(site, "counting_methods", counting)
    install_plugin(site, "counting-plugin", {"counting": "counting_methods"})
    method_names()
    method_names()
    with pytest.raises(KeyError):
        get_method("no_such_method_anywhere")
    assert sys.modules["counting_methods"].LOADS == 1
