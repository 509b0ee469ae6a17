"""RegMean++ merges block by block on the merged blocks' activations (arXiv:2508.03121)."""

from __future__ import annotations

import pytest
import torch

from alloykit.calibrate.regmean_pp import regmean_pp
from alloykit.checkpoint.source import open_source
from alloykit.errors import AlloyError
from alloykit.methods.regmean import regmean


@pytest.fixture(scope="module")
def zoo(zoo_base):
    return zoo_base.parent


def test_merging_a_model_with_itself_gives_it_back(zoo) -> None:
    expert, task = zoo / "experts" / "sort", zoo / "tasks" / "sort"
    result = regmean_pp([expert, expert], [task, task], samples=8)
    source = open_source(str(expert))
    for name in ["model.layers.1.self_attn.o_proj.weight", "model.norm.weight", "lm_head.weight"]:
        torch.testing.assert_close(result.state[name], source.read(name), rtol=1e-4, atol=1e-5)


def test_first_block_is_regmean_on_each_models_norm_of_the_merged_embeddings(zoo) -> None:
    from alloykit.calibrate.batches import encode
    from alloykit.calibrate.examples import load_examples
    from alloykit.evaluate import load_model

    experts = [zoo / "experts" / "sort", zoo / "experts" / "lower"]
    tasks = [zoo / "tasks" / "sort", zoo / "tasks" / "lower"]
    result = regmean_pp(experts, tasks, samples=6, alpha=0.9)
    assert (result.layers, result.forwards) == (4, 2 * 5)
    embeddings = torch.stack(
        [open_source(str(e)).read("model.embed_tokens.weight") for e in experts]
    ).mean(dim=0)
    grams = []
    for expert, task in zip(experts, tasks, strict=True):
        model, tokenizer = load_model(expert)
        norm = model.model.layers[0].input_layernorm
        total, tokens = torch.zeros(128, 128), 0
        with torch.no_grad():
            for example in encode(tokenizer, load_examples(task, 6, 0).examples):
                x = norm(embeddings[torch.tensor(example.ids)])
                total += x.T @ x
                tokens += x.shape[0]
        grams.append(total / tokens)
    name = "model.layers.0.self_attn.q_proj.weight"
    weights = torch.stack([open_source(str(e)).read(name) for e in experts])
    expected = regmean(weights, None, alpha=0.9, gram=torch.stack(grams))
    torch.testing.assert_close(result.state[name], expected, rtol=1e-3, atol=1e-5)


def test_one_data_set_per_model_is_required(zoo) -> None:
    with pytest.raises(AlloyError, match="2 models but 1 data sets"):
        regmean_pp([zoo / "experts" / "sort", zoo / "experts" / "lower"], [zoo / "tasks" / "sort"])
