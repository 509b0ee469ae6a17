"""Merging models whose tokenizers differ: mergekit's tokenizer semantics, row by row.

Each model here is a tiny llama with a WordLevel tokenizer of a few tokens built in the test.
Every model's embedding and head are first laid out in the output vocabulary (a model that
lacks a token gets the row of the one model that has it, else the base's, else the mean of
those that have it, else zeros), then merged by the recipe's method; the expectations below are
computed from the input tensors by hand.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import alloykit
from alloykit.errors import PlanError, RecipeError
from alloykit.tiny_models import build_model

EMBED = "model.embed_tokens.weight"
HEAD = "lm_head.weight"
VOCAB_TENSORS = (EMBED, HEAD)


def tiny_model(directory: Path, tokens: list[str], *, seed: int, special=("[UNK]",)) -> Path:
    """A tiny llama whose vocabulary is ``tokens`` (ids in list order), with its tokenizer."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    build_model("llama", directory, seed=seed, vocab_size=len(tokens))
    tokenizer = Tokenizer(models.WordLevel({t: i for i, t in enumerate(tokens)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.add_special_tokens([AddedToken(t, special=True) for t in special])
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]").save_pretrained(
        directory
    )
    return directory


def tensors_of(model: Path) -> dict[str, torch.Tensor]:
    return load_file(model / "model.safetensors")


def written(out: Path) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for shard in sorted(out.glob("*.safetensors")):
        tensors.update(load_file(shard))
    return tensors


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vocab-models")
    return {
        "a": tiny_model(root / "a", ["[UNK]", "a", "b", "c", "x"], seed=1),
        "b": tiny_model(root / "b", ["[UNK]", "b", "a", "c", "y"], seed=2),
        "base": tiny_model(root / "base", ["[UNK]", "a", "b", "c", "x", "z"], seed=3),
        "a-twin": tiny_model(root / "a-twin", ["[UNK]", "a", "b", "c", "x"], seed=4),
    }


def linear(*paths: Path, **extra: object) -> dict:
    return {"merge_method": "linear", "models": [str(p) for p in paths], **extra}


def vocab_of(out: Path) -> dict[str, int]:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(out).get_vocab()


def assert_loads_and_runs_on(out: Path, text: str) -> None:
    """transformers loads the output and runs it on ``text``'s token ids (new tokens included)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    ids = tokenizer(text, return_tensors="pt").input_ids
    assert int(ids.max()) < model.config.vocab_size
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape[-1] == model.config.vocab_size >= len(tokenizer)
    assert bool(torch.isfinite(logits).all())


def test_union_lays_out_each_models_rows_by_token_before_averaging(models):
    merged = alloykit.merge_to_state_dict(
        linear(models["a"], models["b"], tokenizer_source="union")
    )
    a, b = tensors_of(models["a"]), tensors_of(models["b"])
    for name in VOCAB_TENSORS:
        rows_a, rows_b = a[name], b[name]
        expected = torch.stack(
            [
                (rows_a[0] + rows_b[0]) / 2,  # [UNK]
                (rows_a[1] + rows_b[2]) / 2,  # a: row 1 in a, row 2 in b
                (rows_a[2] + rows_b[1]) / 2,  # b
                (rows_a[3] + rows_b[3]) / 2,  # c
                rows_a[4],  # x: only a has it, so b gets a's row
                rows_b[4],  # y: only b has it (appended by the union)
            ]
        )
        torch.testing.assert_close(merged[name], expected, rtol=0, atol=1e-7)


def test_union_output_loads_in_transformers_and_runs_on_the_new_tokens(models, tmp_path):
    out = alloykit.merge(linear(models["a"], models["b"], tokenizer_source="union"), tmp_path / "o")
    assert vocab_of(out) == {"[UNK]": 0, "a": 1, "b": 2, "c": 3, "x": 4, "y": 5}
    config = json.loads((out / "config.json").read_text())
    assert config["vocab_size"] == 6
    assert {t.shape[0] for n, t in written(out).items() if "embed" in n or "lm_head" in n} == {6}
    assert_loads_and_runs_on(out, "a b x y c")


def test_tokenizer_of_a_model_with_a_larger_vocabulary_sizes_the_embeddings(models, tmp_path):
    """The issue's case: the named model's tokenizer has tokens the others lack."""
    recipe = linear(models["a"], models["base"], tokenizer_source=str(models["base"]))
    out = alloykit.merge(recipe, tmp_path / "o", vocab_mismatch="common_rows")
    merged = written(out)
    a, base = tensors_of(models["a"]), tensors_of(models["base"])
    for name in VOCAB_TENSORS:
        assert merged[name].shape[0] == 6
        torch.testing.assert_close(merged[name][:5], (a[name] + base[name][:5]) / 2)
        torch.testing.assert_close(merged[name][5], base[name][5])  # z: only base has it
    assert json.loads((out / "config.json").read_text())["vocab_size"] == 6
    assert_loads_and_runs_on(out, "z a x")


def test_token_the_base_has_takes_the_base_row_for_models_that_lack_it(models):
    recipe = {
        "merge_method": "task_arithmetic",
        "base_model": str(models["base"]),
        "models": [
            {"model": str(models["a"]), "parameters": {"weight": 0.5}},
            {"model": str(models["b"]), "parameters": {"weight": 0.5}},
        ],
        "tokenizer_source": "union",
    }
    merged = alloykit.merge_to_state_dict(recipe)
    a, b, base = (tensors_of(models[k]) for k in ("a", "b", "base"))
    for name in VOCAB_TENSORS:
        # x: a and the base have it, b does not: b's row is the base's (no task vector)
        expected_x = base[name][4] + 0.5 * (a[name][4] - base[name][4])
        torch.testing.assert_close(merged[name][4], expected_x)
        # z: only the base has it; y (appended after the base's tokens): only b has it
        torch.testing.assert_close(merged[name][5], base[name][5])
        torch.testing.assert_close(merged[name][6], b[name][4])


def test_token_two_models_have_but_not_the_base_gets_their_mean(models, tmp_path):
    twin_and_b = {
        "merge_method": "task_arithmetic",
        "base_model": str(models["b"]),
        "models": [str(models["a"]), str(models["a-twin"])],
        "parameters": {"weight": 0.0},
        "tokenizer_source": "union",
    }
    merged = alloykit.merge_to_state_dict(twin_and_b)
    a, twin, b = (tensors_of(models[k]) for k in ("a", "a-twin", "b"))
    # output ids follow b (the base): [UNK] b a c y, then x; the base's row for x is the mean
    # of the two models that have it, and weight 0 leaves the base's row
    for name in VOCAB_TENSORS:
        torch.testing.assert_close(merged[name][5], (a[name][4] + twin[name][4]) / 2)
        torch.testing.assert_close(merged[name][4], b[name][4])


def test_pad_to_multiple_of_pads_rows_with_each_models_mean_row(models, tmp_path):
    recipe = linear(
        models["a"], models["b"], tokenizer={"source": "union", "pad_to_multiple_of": 4}
    )
    merged = alloykit.merge_to_state_dict(recipe)
    unpadded = alloykit.merge_to_state_dict(
        linear(models["a"], models["b"], tokenizer_source="union")
    )
    for name in VOCAB_TENSORS:
        assert merged[name].shape[0] == 8
        torch.testing.assert_close(merged[name][:6], unpadded[name])
        a, b = tensors_of(models["a"])[name], tensors_of(models["b"])[name]
        a_laid = torch.stack([a[0], a[1], a[2], a[3], a[4], b[4]])
        b_laid = torch.stack([b[0], b[2], b[1], b[3], a[4], b[4]])
        mean_row = (a_laid.mean(0) + b_laid.mean(0)) / 2
        torch.testing.assert_close(merged[name][6], mean_row)
        torch.testing.assert_close(merged[name][7], mean_row)
    out = alloykit.merge(recipe, tmp_path / "o")
    assert json.loads((out / "config.json").read_text())["vocab_size"] == 8
    assert len(vocab_of(out)) == 6
    assert_loads_and_runs_on(out, "y x")


def test_token_overrides_zero_model_token_and_new_tokens(models, tmp_path):
    tokens = {
        "x": {"source": {"kind": "zero"}, "force": True},
        "y": {"source": {"kind": "model_token", "model": str(models["a"]), "token": "c"}},
        "new": {},
    }
    recipe = linear(models["a"], models["b"], tokenizer={"source": "union", "tokens": tokens})
    merged = alloykit.merge_to_state_dict(recipe)
    a, b = tensors_of(models["a"]), tensors_of(models["b"])
    for name in VOCAB_TENSORS:
        assert merged[name].shape[0] == 7
        assert not merged[name][4].any()  # x forced to zero in every model
        torch.testing.assert_close(merged[name][5], (a[name][3] + b[name][4]) / 2)
        assert not merged[name][6].any()  # no model has "new": zeros
    out = alloykit.merge(recipe, tmp_path / "o")
    assert vocab_of(out)["new"] == 6
    assert_loads_and_runs_on(out, "new x y")


def test_forced_model_source_gives_every_model_that_models_row(models):
    tokens = {"a": {"source": str(models["b"]), "force": True}}
    recipe = linear(models["a"], models["b"], tokenizer={"source": "union", "tokens": tokens})
    merged = alloykit.merge_to_state_dict(recipe)
    for name in VOCAB_TENSORS:
        torch.testing.assert_close(merged[name][1], tensors_of(models["b"])[name][2])


def test_same_vocabulary_everywhere_is_the_plain_merge_with_the_files_copied(models, tmp_path):
    recipe = linear(models["a"], models["a-twin"], tokenizer_source=str(models["a-twin"]))
    plan = alloykit.plan(recipe)
    assert plan.vocabulary is None
    out = alloykit.merge(recipe, tmp_path / "o")
    source = models["a-twin"] / "tokenizer.json"
    assert (out / "tokenizer.json").read_bytes() == source.read_bytes()
    merged, plain = (
        written(out),
        alloykit.merge_to_state_dict(linear(models["a"], models["a-twin"])),
    )
    for name, tensor in plain.items():
        torch.testing.assert_close(merged[name], tensor, rtol=0, atol=0)


def test_tokens_beyond_the_models_vocabulary_size_get_rows(models, tmp_path):
    """A tokenizer larger than its model's embeddings still gets one row per token."""
    grown = tmp_path / "grown"
    tiny_model(grown, ["[UNK]", "a", "b", "c", "x", "q", "r"], seed=1)
    tensors = {
        n: t[:5].clone() if t.shape[0] == 7 and t.dim() == 2 else t
        for n, t in tensors_of(grown).items()
    }
    save_file(tensors, grown / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((grown / "config.json").read_text())
    config["vocab_size"] = 5
    (grown / "config.json").write_text(json.dumps(config))
    out = alloykit.merge(linear(grown, models["a"], tokenizer_source=str(grown)), tmp_path / "o")
    merged = written(out)
    assert merged[EMBED].shape[0] == 7
    assert not merged[EMBED][5:].any()  # no model has a row for q or r
    assert_loads_and_runs_on(out, "q r a")


def test_token_source_naming_a_model_without_the_token_is_a_plan_error(models):
    tokens = {"y": {"source": str(models["a"])}}
    recipe = linear(models["a"], models["b"], tokenizer={"source": "union", "tokens": tokens})
    with pytest.raises(PlanError, match=r"tokenizer\.tokens\.y\.source: model .* has no token 'y'"):
        alloykit.plan(recipe)


def test_union_without_tokenizer_files_is_a_plan_error(llama):
    with pytest.raises(PlanError, match="has no tokenizer files"):
        alloykit.plan(linear(llama["ft1"], llama["ft2"], tokenizer_source="union"))


@pytest.mark.parametrize(
    ("tokenizer", "message"),
    [
        (
            {"source": "union", "pad_to_multiple_of": 0},
            "tokenizer.pad_to_multiple_of: expected a positive integer",
        ),
        ({"tokens": {"x": {"force": True}}}, "tokenizer.tokens.x.force: force needs a source"),
        (
            {"tokens": {"x": {"source": {"kind": "one"}}}},
            "tokenizer.tokens.x.source.kind: unknown kind 'one'",
        ),
        (
            {"tokens": {"x": {"source": {"kind": "model_token", "model": "m"}}}},
            "tokenizer.tokens.x.source: give exactly one of token: and token_id:",
        ),
        ({"tokens": {"x": {"sauce": "m"}}}, "tokenizer.tokens.x.sauce: unknown key"),
    ],
)
def test_bad_tokenizer_block_names_the_key(tokenizer, message):
    with pytest.raises(RecipeError) as caught:
        alloykit.plan(linear(Path("nowhere-a"), tokenizer=tokenizer))
    assert caught.value.message.startswith(message)


def test_plan_says_the_vocabulary_is_laid_out_again(models):
    plan = alloykit.plan(
        linear(models["a"], models["b"], tokenizer={"source": "union", "pad_to_multiple_of": 4})
    )
    assert any(w.startswith("tokenizer union: 6 tokens, padded to 8 rows") for w in plan.warnings)
    assert {tuple(e.shape) for e in plan.entries if e.name in VOCAB_TENSORS} == {(8, 32)}


def test_slices_lay_out_the_first_and_last_slices_vocabulary_tensors(models):
    slices = [
        {"sources": [{"model": str(models["a"]), "layer_range": [0, 2]}]},
        {"sources": [{"model": str(models["b"]), "layer_range": [2, 4]}]},
    ]
    recipe = {"merge_method": "passthrough", "slices": slices, "tokenizer_source": "union"}
    merged = alloykit.merge_to_state_dict(recipe)
    a, b = tensors_of(models["a"]), tensors_of(models["b"])
    # embeddings from a (first slice): y is b's token, which no model of that slice has
    torch.testing.assert_close(merged[EMBED][:5], a[EMBED])
    assert not merged[EMBED][5].any()
    # head from b (last slice): laid out in the union's ids
    expected_head = torch.stack([b[HEAD][i] for i in (0, 2, 1, 3)])
    torch.testing.assert_close(merged[HEAD][:4], expected_head)
    assert not merged[HEAD][4].any()
    torch.testing.assert_close(merged[HEAD][5], b[HEAD][4])


def test_a_model_with_only_a_slow_tokenizer_joins_the_union(models, tmp_path):
    """vocab.json + merges.txt and no tokenizer.json: transformers converts it (no remote code)."""
    slow = tmp_path / "slow"
    build_model("llama", slow, seed=5, vocab_size=5)
    (slow / "vocab.json").write_text(json.dumps({"[UNK]": 0, "a": 1, "b": 2, "ab": 3, "q": 4}))
    (slow / "merges.txt").write_text("#version: 0.2\na b\n")
    (slow / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "GPT2Tokenizer", "unk_token": "[UNK]"})
    )
    recipe = linear(models["a"], slow, tokenizer_source="union")
    merged = alloykit.merge_to_state_dict(recipe)
    a, s = tensors_of(models["a"]), tensors_of(slow)
    for name in VOCAB_TENSORS:
        assert merged[name].shape[0] == 7  # a's five tokens, then ab and q
        torch.testing.assert_close(merged[name][1], (a[name][1] + s[name][1]) / 2)
        torch.testing.assert_close(merged[name][3], a[name][3])  # c: only a has it
        torch.testing.assert_close(merged[name][5], s[name][3])  # ab
        torch.testing.assert_close(merged[name][6], s[name][4])  # q


def test_cli_merge_with_a_larger_tokenizer_and_common_rows_gives_a_model_that_runs(
    models, tmp_path
):
    import yaml
    from typer.testing import CliRunner

    from alloykit.cli import app

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        yaml.safe_dump(linear(models["a"], models["base"], tokenizer_source=str(models["base"])))
    )
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["merge", str(recipe), str(out), "--vocab-mismatch", "common_rows"]
    )
    assert result.exit_code == 0, result.output
    assert len(vocab_of(out)) == written(out)[EMBED].shape[0] == 6
    assert_loads_and_runs_on(out, "z x a")


def test_a_model_merged_with_its_reordered_twin_is_itself(models, tmp_path):
    """The twin lists the same tokens in another order, with its rows moved to match: laid
    out in the union's vocabulary, the two are the same model."""
    order = [3, 0, 4, 2, 1]  # twin id i holds a's token order[i]
    tokens = ["[UNK]", "a", "b", "c", "x"]
    twin = tiny_model(tmp_path / "twin", [tokens[i] for i in order], seed=1)
    a = tensors_of(models["a"])
    tensors = {n: t[order].clone() if n in VOCAB_TENSORS else t for n, t in a.items()}
    save_file(tensors, twin / "model.safetensors", metadata={"format": "pt"})
    merged = alloykit.merge_to_state_dict(linear(models["a"], twin, tokenizer_source="union"))
    for name, tensor in a.items():
        torch.testing.assert_close(merged[name], tensor, rtol=0, atol=0)
