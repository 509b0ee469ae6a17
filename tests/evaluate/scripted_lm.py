"""A stand-in language model whose greedy replies are written out in advance, for exact-match
cases that a trained model would produce only by chance (trailing spaces, another tokenization,
a newline inside a token, a skipped special token, an id the tokenizer does not know)."""

from __future__ import annotations

from types import SimpleNamespace

import torch

TOP = 10.0


class History(list):
    """The scripted model's "KV cache": each row's tokens so far."""

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self[:] = [self[int(i)] for i in indices]


class ScriptedLM(torch.nn.Module):
    """After ``prompt`` (with the tokenizer's BOS) the k-th greedy token is ``replies[prompt][k]``,
    then ``filler`` for ever. Its "KV cache" is the token history, so generation's incremental
    steps and one teacher-forced pass see the same ranking. ``ties`` maps a reply position to a
    second token whose logit equals the first's there. ``selectable_cache=False`` returns the
    cache as a plain list, which cannot drop rows (as an older transformers' tuples)."""

    def __init__(
        self,
        tokenizer,
        replies: dict[str, list[int]],
        *,
        filler: int,
        extra_vocab: int = 4,
        ties: dict[tuple[str, int], int] | None = None,
        selectable_cache: bool = True,
    ) -> None:
        super().__init__()
        self.vocab = len(tokenizer) + extra_vocab
        self.head = torch.nn.Linear(1, self.vocab, bias=False)
        self.generation_config = SimpleNamespace(eos_token_id=tokenizer.eos_token_id)
        prompts = {prompt: tuple(tokenizer(prompt)["input_ids"]) for prompt in replies}
        self.replies = [(prompts[prompt], reply) for prompt, reply in replies.items()]
        self.replies.sort(key=lambda item: -len(item[0]))
        self.ties = {(prompts[prompt], k): token for (prompt, k), token in (ties or {}).items()}
        self.filler = filler
        self.cache_type = History if selectable_cache else list

    def get_output_embeddings(self) -> torch.nn.Linear:
        return self.head

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        use_cache: bool = False,
        past_key_values: list[list[int]] | None = None,
        logits_to_keep: int = 0,
    ) -> SimpleNamespace:
        rows, width = input_ids.shape
        history = past_key_values or [[] for _ in range(rows)]
        fresh = attention_mask[:, -width:]
        logits = torch.zeros(rows, width, self.vocab)
        seen_by_row = self.cache_type()
        for row in range(rows):
            seen = list(history[row])
            for column in range(width):
                if fresh[row, column]:
                    seen.append(int(input_ids[row, column]))
                    for token in self._ranked_first(seen):
                        logits[row, column, token] = TOP
            seen_by_row.append(seen)
        if logits_to_keep:
            logits = logits[:, -logits_to_keep:]
        return SimpleNamespace(logits=logits, past_key_values=seen_by_row)

    def _ranked_first(self, seen: list[int]) -> list[int]:
        for prompt, reply in self.replies:
            if tuple(seen[: len(prompt)]) == prompt:
                k = len(seen) - len(prompt)
                first = reply[k] if k < len(reply) else self.filler
                tie = self.ties.get((prompt, k))
                return [first] if tie is None else [first, tie]
        return [self.filler]
