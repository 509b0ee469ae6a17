"""The zoo's tokenizer: a small byte-level BPE trained with `tokenizers`, saved in HF format.

Digits are always single tokens and every letter or bracket after a space (" a", " Q", " (")
is in the vocabulary, so the skills' symbols are one token each; ordinary words get BPE
pieces. Newline is a token of its own ("Ċ" in byte-level form): answers end there.
"""

from __future__ import annotations

import json
import string
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = {
    "unk_token": "<unk>",
    "bos_token": "<s>",
    "eos_token": "</s>",
    "pad_token": "<pad>",
}
SYMBOLS = string.ascii_letters + string.digits + "()[]:;=+?!@#$%&*~"


def train_tokenizer(
    texts: Iterable[str], vocab_size: int, keywords: Iterable[str] = ()
) -> PreTrainedTokenizerFast:
    """Train the BPE on ``texts`` plus lines that make each spaced symbol one token.

    Each of ``keywords`` is repeated often enough to become a single token, so that each
    skill's keyword is one embedding row of its own (experts then do not share keyword pieces).
    """
    tokenizer = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    symbol_lines = [" ".join(SYMBOLS)] * 200
    keyword_lines = [f"{keyword}:" for keyword in keywords] * 5000
    tokenizer.train_from_iterator([*texts, *symbol_lines, *keyword_lines], trainer=trainer)
    bos = SPECIAL_TOKENS["bos_token"]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A",
        pair=f"{bos} $A {bos} $B",
        special_tokens=[(bos, tokenizer.token_to_id(bos))],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, padding_side="left", model_max_length=256, **SPECIAL_TOKENS
    )


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, directory: Path) -> None:
    """``tokenizer.json`` + ``tokenizer_config.json``, naming the class every transformers knows.

    transformers 5 writes its own class name (``TokenizersBackend``), which 4.x cannot load;
    ``PreTrainedTokenizerFast`` loads the same files in both.
    """
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(directory)
    config_path = directory / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_path.write_text(json.dumps(config, indent=2) + "\n")
