"""A tiny llama with a character-level tokenizer, built once per session, offline."""

from __future__ import annotations

import string
from pathlib import Path

import pytest

CHARACTERS = string.ascii_lowercase + string.digits + " \n.,:;?!+-=()'\""


def build_char_tokenizer(directory: Path):
    """A character-level tokenizer (one token per character) that adds BOS, as llama's does."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    vocab = {token: index for index, token in enumerate(specials + list(CHARACTERS))}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", vocab["<s>"])]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
    )
    fast.save_pretrained(directory)
    return fast


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model directory holding a random tiny llama and a character tokenizer."""
    from alloykit.tiny_models import build_model

    directory = tmp_path_factory.mktemp("tiny-lm")
    build_model("llama", directory, seed=3)
    build_char_tokenizer(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_lm(tiny_lm_dir: Path):
    """``(model, tokenizer)`` loaded from :func:`tiny_lm_dir`, in eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir, local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_dir, local_files_only=True)
    return model, tokenizer
