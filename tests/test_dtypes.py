"""Dtypes by name: each one's name, safetensors code and size agree with torch and safetensors."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from alloykit.dtypes import (
    BF16,
    BY_CODE,
    F16,
    F32,
    F64,
    DType,
    of_torch,
    parse_dtype,
    widest_dtype,
)
from alloykit.errors import PlanError

ALL = list(BY_CODE.values())


def _stored_code(path: Path, tensor: torch.Tensor) -> str:
    save_file({"t": tensor}, path)
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + length])["t"]["dtype"]


@pytest.mark.parametrize("dtype", ALL, ids=str)
def test_each_dtype_is_the_torch_dtype_of_its_name(dtype: DType) -> None:
    assert dtype.torch.itemsize == dtype.itemsize
    assert dtype.torch.is_floating_point == dtype.is_floating_point
    assert str(dtype) == dtype.name == str(dtype.torch).removeprefix("torch.")


@pytest.mark.parametrize("dtype", ALL, ids=str)
def test_each_dtype_has_the_code_safetensors_writes(dtype: DType, tmp_path: Path) -> None:
    assert _stored_code(tmp_path / "t.safetensors", torch.zeros(3, dtype=dtype.torch)) == dtype.code
    assert BY_CODE[dtype.code] is dtype


@pytest.mark.parametrize("dtype", ALL, ids=str)
def test_of_torch_round_trips(dtype: DType) -> None:
    assert of_torch(dtype.torch) is dtype


def test_of_torch_refuses_a_dtype_safetensors_cannot_store() -> None:
    with pytest.raises(TypeError, match="complex64"):
        of_torch(torch.complex64)


@pytest.mark.parametrize(
    ("name", "dtype"),
    [
        ("bf16", BF16),
        ("bfloat16", BF16),
        ("torch.float16", F16),
        ("half", F16),
        ("FP32", F32),
        ("float64", F64),
    ],
)
def test_parse_dtype_accepts_the_usual_aliases(name: str, dtype: DType) -> None:
    assert parse_dtype(name, "dtype") is dtype


def test_parse_dtype_names_the_place_and_the_choices() -> None:
    with pytest.raises(PlanError, match=r"--out-dtype: unknown dtype 'float13'.*bf16, bfloat16"):
        parse_dtype("float13", "--out-dtype")


def test_the_widest_dtype_follows_torch_promotion() -> None:
    for dtypes in ([BF16], [F16, F16], [BF16, F32], [F16, BF16], [F32, F64, BF16], [F16, F32]):
        expected = dtypes[0].torch
        for dtype in dtypes[1:]:
            expected = torch.promote_types(expected, dtype.torch)
        assert widest_dtype(dtypes).torch == expected, dtypes
