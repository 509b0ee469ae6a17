"""Greedy soup and AdaMerging: the algorithms on exact inputs, then once on the zoo."""

from __future__ import annotations

import math

import pytest
import torch

from alloykit.calibrate.adamerging import (
    AdaMergingSettings,
    adamerging,
    entropy_of_next_token,
    merged_parameters,
)
from alloykit.calibrate.checkpoint_out import write_checkpoint
from alloykit.calibrate.greedy_soup import greedy_selection
from alloykit.errors import AlloyError


def test_greedy_soup_tries_ingredients_best_first_and_keeps_those_that_do_not_hurt() -> None:
    individual = {"a": 0.5, "b": 0.9, "c": 0.7, "d": 0.6}
    soups = {("b", "c"): 0.8, ("b", "d"): 0.95, ("b", "d", "a"): 0.95}
    tried = []

    def soup_score(ingredients: list[str]) -> float:
        tried.append(tuple(ingredients))
        return soups[tuple(ingredients)]

    soup = greedy_selection(individual, soup_score)
    assert tried == [("b", "c"), ("b", "d"), ("b", "d", "a")]
    assert soup.kept == ("b", "d", "a")  # equal validation score keeps it (the paper's >=)
    assert soup.score == 0.95
    assert [s.kept for s in soup.steps] == [True, False, True, True]


def test_greedy_soup_of_one_model_is_that_model() -> None:
    soup = greedy_selection({"a": 0.3}, lambda ingredients: pytest.fail("nothing to add"))
    assert soup.kept == ("a",)
    assert soup.recipe()["models"] == [{"model": "a", "parameters": {"weight": 1.0}}]


def test_greedy_soup_without_ingredients_is_refused() -> None:
    with pytest.raises(AlloyError, match="no ingredients"):
        greedy_selection({}, lambda ingredients: 0.0)


def test_uniform_next_token_distribution_has_entropy_log_vocabulary() -> None:
    logits = torch.zeros(2, 3, 5)
    logits[1, 2] = torch.tensor([0.0, -1e9, -1e9, -1e9, -1e9])  # certain: entropy 0
    assert entropy_of_next_token(logits, torch.tensor([0, 1])).item() == pytest.approx(math.log(5))
    assert entropy_of_next_token(logits, torch.tensor([1, 2])).item() == pytest.approx(
        math.log(5) / 2
    )


def test_merged_parameters_add_each_task_vector_scaled_by_its_coefficient() -> None:
    base = {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor([0.0])}
    vectors = {"w": torch.tensor([[1.0, 0.0], [0.0, 4.0]]), "b": torch.tensor([[2.0], [3.0]])}
    layer_wise = torch.tensor([[0.5, 1.0], [0.25, 0.0]])
    merged = merged_parameters(base, vectors, layer_wise, ["w", "b"])
    torch.testing.assert_close(merged["w"], torch.tensor([1.5, 3.0]))
    torch.testing.assert_close(merged["b"], torch.tensor([2.0]))
    task_wise = torch.tensor([[0.5], [0.25]])
    merged = merged_parameters(base, vectors, task_wise, ["w", "b"])
    torch.testing.assert_close(merged["b"], torch.tensor([0.5 * 2 + 0.25 * 3]))


@pytest.fixture(scope="module")
def learned(zoo_base):
    zoo = zoo_base.parent
    settings = AdaMergingSettings(steps=3, samples=8, batch_size=4, lr=0.05)
    experts = [zoo / "experts" / "sort", zoo / "experts" / "lower"]
    data = [zoo / "tasks" / "sort", zoo / "tasks" / "lower"]
    return adamerging(zoo_base, experts, data, settings), settings, experts, data


def test_adamerging_learns_bounded_layer_wise_coefficients(learned) -> None:
    result, settings, _, _ = learned
    assert result.coefficients.shape == (2, len(result.tensor_names))
    assert ((result.coefficients >= 0) & (result.coefficients <= 1)).all()
    assert not torch.all(result.coefficients == settings.init)
    assert len(result.entropy) == settings.steps


def test_adamerging_output_is_base_plus_scaled_task_vectors(learned, zoo_base) -> None:
    from alloykit.checkpoint.source import open_source

    result, _, experts, _ = learned
    name = "model.layers.2.mlp.up_proj.weight"
    column = result.tensor_names.index(name)
    base = open_source(str(zoo_base)).read(name)
    expected = base.clone()
    for k, expert in enumerate(experts):
        delta = open_source(str(expert)).read(name) - base
        expected += result.coefficients[k, column] * delta
    torch.testing.assert_close(result.state[name], expected, rtol=1e-5, atol=1e-6)


def test_adamerging_is_reproducible_from_its_seed(learned, zoo_base) -> None:
    result, settings, experts, data = learned
    again = adamerging(zoo_base, experts, data, settings)
    torch.testing.assert_close(again.coefficients, result.coefficients)


def test_written_checkpoint_loads_with_the_merged_weights(learned, zoo_base, tmp_path) -> None:
    from alloykit.evaluate import load_model

    result = learned[0]
    out = write_checkpoint(result.state, zoo_base, tmp_path / "merged", card="# card\n")
    model, _ = load_model(out)
    name = "model.layers.0.self_attn.q_proj.weight"
    torch.testing.assert_close(dict(model.named_parameters())[name].detach(), result.state[name])
    assert (out / "README.md").read_text() == "# card\n"
    assert (out / "tokenizer.json").is_file()
