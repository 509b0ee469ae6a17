"""Write a model computed in memory (by a data-driven driver) as an ordinary checkpoint.

The tensors go through the same :class:`~alloykit.checkpoint.sink.DirectorySink` as every
merge (sharded safetensors in ``OUT.partial/``, renamed into place once complete), beside the
reference model's config and tokenizer and a model card saying how the weights were found.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import torch

from alloykit.checkpoint.model_files import copy_carried, copy_tokenizer, write_config
from alloykit.checkpoint.sink import DirectorySink, OutputTensor, check_output_dir
from alloykit.checkpoint.source import open_source
from alloykit.dtypes import of_torch
from alloykit.errors import AlloyError

SHARD_BYTES = 5 * 10**9


def write_checkpoint(
    tensors: Mapping[str, torch.Tensor],
    reference: str | Path,
    out: str | Path,
    *,
    card: str,
    force: bool = False,
) -> Path:
    """Write ``tensors`` (names as in ``reference``'s checkpoint) with ``reference``'s config
    and tokenizer and the model card ``card`` into ``out``; return its path."""
    out = Path(out)
    check_output_dir(out.absolute(), force)
    source = open_source(str(reference))
    outputs = [OutputTensor(n, of_torch(t.dtype), tuple(t.shape)) for n, t in tensors.items()]
    identity = hashlib.sha256(card.encode()).hexdigest()
    sink = DirectorySink(out, outputs, shard_bytes=SHARD_BYTES, fingerprint=identity, force=force)
    sink.open()
    try:
        for name, tensor in tensors.items():
            if name not in sink.done:
                sink.write(name, tensor.detach().cpu().contiguous())
        write_config(dict(source.config), sink.partial_dir)
        copy_carried(source, sink.partial_dir)
        copy_tokenizer(source, sink.partial_dir)
        (sink.partial_dir / "README.md").write_text(card)
        return sink.commit()
    except AlloyError:
        sink.abort(keep_for_resume=False)
        raise
    except BaseException:
        sink.abort(keep_for_resume=True)
        raise
