"""A tokenizer that encodes each text once: for scoring many models on the same examples.

A recipe search scores every candidate on the same prompts and answers; tokenizing them again
for each candidate is work that gives the same ids every time (a tokenizer is a pure function
of its text and settings). :class:`RememberedTokenizer` wraps a tokenizer that will not be
changed while it is in use (no tokens added, no settings switched) and answers the batched
calls the evaluators make, ``tokenizer(texts)["input_ids"]`` with or without
``add_special_tokens``, from the ids it has already seen; anything else goes to the tokenizer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

_DEFAULT = object()


class RememberedTokenizer:
    """``tokenizer``, remembering the ``input_ids`` of every text it has encoded.

    Texts are encoded one by one either way (no padding or truncation is asked for), so ids
    from a batch of misses are each text's own ids. Memory grows with the distinct texts seen:
    meant for a fixed set of examples, not a stream.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self._ids: dict[tuple[str, object], tuple[int, ...]] = {}

    def __call__(self, text: Any, **options: Any) -> Any:
        if not _is_text_list(text) or set(options) - {"add_special_tokens"}:
            return self.tokenizer(text, **options)
        special = options.get("add_special_tokens", _DEFAULT)
        missing = [t for t in dict.fromkeys(text) if (t, special) not in self._ids]
        if missing:
            encoded = self.tokenizer(missing, **options)["input_ids"]
            for one, ids in zip(missing, encoded, strict=True):
                self._ids[one, special] = tuple(ids)
        return {"input_ids": [list(self._ids[t, special]) for t in text]}

    def __len__(self) -> int:
        return len(self.tokenizer)

    def __getattr__(self, name: str) -> Any:
        if name in ("tokenizer", "_ids"):  # not set yet: an instance being copied or unpickled
            raise AttributeError(name)
        return getattr(self.tokenizer, name)


def _is_text_list(text: Any) -> bool:
    return (
        isinstance(text, Sequence)
        and not isinstance(text, str)
        and all(isinstance(one, str) for one in text)
    )
