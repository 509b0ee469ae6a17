"""Tiny dense families with a character tokenizer (the prompted gate modes need one)."""

from __future__ import annotations

import string
from pathlib import Path

import pytest
import torch

SYMBOLS = [*string.ascii_lowercase, *string.digits, *" .,:;=+-?!"]


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy machine their
    synchronisation makes each forward pass 50x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def save_char_tokenizer(directory: Path) -> None:
    """A tokenizer with one token per character and a BOS, small enough for vocab 128."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(["<unk>", "<s>", "</s>", *SYMBOLS])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", vocab["<s>"])]
    )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    wrapped.save_pretrained(directory)


@pytest.fixture(scope="session")
def dense(tmp_path_factory: pytest.TempPathFactory):
    """``dense(family)`` → {"base", "ft1", "ft2"}: a tiny base with a tokenizer, two fine-tunes."""
    from alloykit.tiny_models import build_family

    cache: dict[str, dict[str, Path]] = {}

    def get(family: str) -> dict[str, Path]:
        if family not in cache:
            root = tmp_path_factory.mktemp(f"dense-{family}")
            models = build_family(family, root, finetunes=2, seed=0)
            for directory in models.values():
                save_char_tokenizer(directory)
            cache[family] = models
        return cache[family]

    return get
