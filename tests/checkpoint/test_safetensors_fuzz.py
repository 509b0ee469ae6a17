"""Malformed safetensors headers are refused with one line naming the file, never a crash or a
read outside the file: bad JSON, wrong header lengths, offsets out of range, overlapping
tensors, sizes that do not match shape x dtype, unknown dtypes, negative or huge shapes,
duplicate names (hypothesis generates them from a valid header)."""

from __future__ import annotations

import itertools
import json
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alloykit.checkpoint.safetensors_format import read_header
from alloykit.errors import CheckpointError

ITEMSIZE = {"F32": 4, "BF16": 2, "F16": 2, "I64": 8, "U8": 1}


def _write(path: Path, header: bytes, data_bytes: int, declared: int | None = None) -> Path:
    length = len(header) if declared is None else declared
    path.write_bytes(struct.pack("<Q", length) + header + bytes(data_bytes))
    return path


def _valid(tensors: list[tuple[str, str, list[int]]]) -> tuple[dict, int]:
    """A header laying ``(name, dtype, shape)`` tensors side by side, and its data size."""
    header, offset = {}, 0
    for name, dtype, shape in tensors:
        size = ITEMSIZE[dtype]
        for d in shape:
            size *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    return header, offset


def _assert_safe(path: Path, data_start_bound: int | None = None) -> None:
    """``read_header`` either refuses with a one-line CheckpointError naming the file, or
    returns tensors whose bytes lie inside the file, disjoint, of shape x dtype bytes."""
    try:
        entries, _ = read_header(path)
    except CheckpointError as exc:
        assert str(path) in str(exc)
        assert "\n" not in str(exc)
        return
    size = path.stat().st_size
    spans = []
    for entry in entries.values():
        assert 8 <= entry.start <= entry.end <= size
        assert entry.end - entry.start == entry.numel * entry.dtype.itemsize
        spans.append((entry.start, entry.end))
    spans = sorted(s for s in spans if s[1] > s[0])
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))


names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=8)
shapes = st.lists(st.integers(0, 5), max_size=3)
tensors = st.lists(st.tuples(names, st.sampled_from(sorted(ITEMSIZE)), shapes), max_size=4)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)


@st.composite
def mutated(draw) -> tuple[bytes, int, int | None]:
    """A valid header with one field replaced, extra data, or a wrong declared length."""
    header, data = _valid(draw(tensors))
    names_in = sorted(header)
    kind = draw(st.sampled_from(["field", "offsets", "shape", "dtype", "extra", "length", "raw"]))
    declared = None
    if names_in and kind in ("field", "offsets", "shape", "dtype"):
        entry = header[draw(st.sampled_from(names_in))]
        if kind == "field":
            entry[draw(st.sampled_from(["dtype", "shape", "data_offsets"]))] = draw(json_values)
        elif kind == "offsets":
            big = st.integers(-(2**66), 2**66)
            entry["data_offsets"] = [draw(big | st.integers(-8, data + 8)) for _ in range(2)]
        elif kind == "shape":
            entry["shape"] = draw(st.lists(st.integers(-(2**64), 2**64) | st.integers(-2, 6)))
        else:
            entry["dtype"] = draw(st.text(max_size=6) | st.sampled_from(["F8_E4M3", "C64"]))
    elif kind == "extra":
        header[draw(names)] = draw(json_values)
    elif kind == "length":
        declared = draw(st.integers(0, 2**64 - 1) | st.integers(0, 200))
    body = json.dumps(header).encode()
    if kind == "raw":
        body = draw(st.binary(max_size=64))
    data += draw(st.integers(-data, 16))
    return body, data, declared


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=mutated())
def test_malformed_headers_are_refused_with_one_line(tmp_path: Path, case) -> None:
    body, data, declared = case
    _assert_safe(_write(tmp_path / "model.safetensors", body, data, declared))


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(first=st.integers(0, 12), second=st.integers(0, 12))
def test_overlapping_tensors_are_refused(tmp_path: Path, first: int, second: int) -> None:
    header = {
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [first, first + 8]},
        "b": {"dtype": "F32", "shape": [2], "data_offsets": [second, second + 8]},
    }
    path = _write(tmp_path / "model.safetensors", json.dumps(header).encode(), 24)
    if abs(first - second) < 8:
        with pytest.raises(CheckpointError, match="overlap"):
            read_header(path)
    else:
        assert set(read_header(path)[0]) == {"a", "b"}  # in any order


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "a": '
         b'{"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}', "appears twice"),
        (b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [-4, 0]}}', "invalid data_offsets"),
        (b'{"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}', "invalid shape"),
        (b'{"a": {"dtype": "F32", "shape": [true], "data_offsets": [0, 4]}}', "invalid shape"),
        (b'{"a": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 4]}}',
         "do not match"),
        (b'{"a": {"dtype": "Q4", "shape": [1], "data_offsets": [0, 4]}}', "unsupported dtype"),
        (b'{"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]}}', "past the end"),
        (b'{"__metadata__": [1, 2]}', "__metadata__"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"a": ', "corrupt safetensors header"),
    ],
)  # fmt: skip
def test_each_kind_of_malformed_header_names_what_is_wrong(
    tmp_path: Path, body: bytes, match: str
) -> None:
    path = _write(tmp_path / "model.safetensors", body, 8)
    with pytest.raises(CheckpointError, match=match) as raised:
        read_header(path)
    assert str(path) in str(raised.value) and "\n" not in str(raised.value)
