"""Tensor dtypes by name: what planning and byte I/O need to know of a dtype, without torch.

A plan is made from safetensors headers alone, and bytes can be read and written without
tensors; a dtype's name, safetensors code and size are all they need. Importing torch took
about 3 s of a 7 s merge, so only code that computes with torch converts, with
:attr:`DType.torch` and :func:`of_torch`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from alloykit.errors import PlanError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class DType:
    """One element type a safetensors file can hold."""

    name: str  # torch's name, which config.json's torch_dtype also uses
    code: str  # the safetensors header's
    itemsize: int  # bytes per element
    is_floating_point: bool

    def __str__(self) -> str:
        return self.name

    @property
    def torch(self) -> torch.dtype:
        """The torch dtype (imports torch)."""
        import torch

        return getattr(torch, self.name)


F64 = DType("float64", "F64", 8, True)
F32 = DType("float32", "F32", 4, True)
F16 = DType("float16", "F16", 2, True)
BF16 = DType("bfloat16", "BF16", 2, True)
F8_E4M3 = DType("float8_e4m3fn", "F8_E4M3", 1, True)
F8_E5M2 = DType("float8_e5m2", "F8_E5M2", 1, True)
I64 = DType("int64", "I64", 8, False)
I32 = DType("int32", "I32", 4, False)
I16 = DType("int16", "I16", 2, False)
I8 = DType("int8", "I8", 1, False)
U8 = DType("uint8", "U8", 1, False)
BOOL = DType("bool", "BOOL", 1, False)

BY_CODE: dict[str, DType] = {
    d.code: d for d in (F64, F32, F16, BF16, F8_E4M3, F8_E5M2, I64, I32, I16, I8, U8, BOOL)
}
_BY_NAME: dict[str, DType] = {d.name: d for d in BY_CODE.values()}

ALIASES: dict[str, DType] = {
    "float32": F32,
    "fp32": F32,
    "float16": F16,
    "fp16": F16,
    "half": F16,
    "bfloat16": BF16,
    "bf16": BF16,
    "float64": F64,
}
"""The names a recipe or an option may give a compute or output dtype."""


def widest_dtype(dtypes: list[DType]) -> DType:
    """The dtype a merge of inputs in ``dtypes`` is written in when no dtype is asked for, as
    torch's type promotion (and so mergekit) gives it: the inputs' one dtype, else the largest,
    else float32 for two of one size (bfloat16 with float16)."""
    largest = max(d.itemsize for d in dtypes)
    widest = {d for d in dtypes if d.itemsize == largest}
    return widest.pop() if len(widest) == 1 else F32


def of_torch(dtype: torch.dtype) -> DType:
    """The DType of a tensor made by torch code (pickles, derived tensors, merged rows);
    TypeError for a dtype safetensors cannot store (e.g. complex)."""
    found = _BY_NAME.get(str(dtype).removeprefix("torch."))
    if found is None:
        raise TypeError(f"{dtype} cannot be stored in safetensors")
    return found


def parse_dtype(name: str, where: str) -> DType:
    """A dtype named in a recipe or option (``where`` says which, for the error)."""
    dtype = ALIASES.get(name.lower().removeprefix("torch."))
    if dtype is None:
        raise PlanError(
            f"{where}: unknown dtype {name!r}", f"use one of {', '.join(sorted(ALIASES))}"
        )
    return dtype
