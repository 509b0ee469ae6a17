"""The kernels' torch bindings refuse buffers the C code would misread (wrong dtype, layout or
size) with a KernelArgumentError, before any C code runs: a float32 chunk handed to the
bfloat16 widening once overran its buffer (issue 20)."""

from __future__ import annotations

import os

import pytest
import torch

from alloykit import native
from alloykit.native import Keep, KeepMode, KernelArgumentError, Pcg64, SignVote

pytestmark = pytest.mark.skipif(
    not native.available() and os.environ.get("ALLOYKIT_REQUIRE_NATIVE") != "1",
    reason="alloykit's C kernels are not built here (no C compiler at install time)",
)

F32, BF16 = torch.float32, torch.bfloat16


def _keeps(n: int) -> list[Keep]:
    return [Keep(mode=KeepMode.ALL, weight=1.0) for _ in range(n)]


def _task_vectors(x, base, out, n=None, keeps=None):
    keeps = _keeps(x.shape[0] if n is None else n) if keeps is None else keeps
    options = {"sign": SignVote.NONE, "normalize": False, "divide_by": 1.0, "scale": 1.0}
    return native.task_vectors(x, base, keeps, out=out, **options)


CALLS = {
    "widen float32 source": lambda: native.widen_bf16(torch.ones(8), torch.empty(8, dtype=BF16)),
    "widen short output": lambda: native.widen_bf16(torch.ones(8, dtype=BF16), torch.empty(4)),
    "narrow bfloat16 source": lambda: native.narrow_bf16(torch.ones(8, dtype=BF16), torch.empty(8)),
    "narrow short output": lambda: native.narrow_bf16(torch.ones(8), torch.empty(4, dtype=BF16)),
    "narrow strided source": lambda: native.narrow_bf16(
        torch.ones(8, 2)[:, 0], torch.empty(8, dtype=BF16)
    ),
    "finite float32": lambda: native.finite_bf16(torch.ones(8)),
    "weighted sum short output": lambda: native.weighted_sum(
        torch.ones(2, 8), torch.ones(2), 1.0, torch.empty(4)
    ),
    "weighted sum too few weights": lambda: native.weighted_sum(
        torch.ones(3, 8), torch.ones(2), 1.0, torch.empty(8)
    ),
    "weighted sum bfloat16 output": lambda: native.weighted_sum(
        torch.ones(2, 8), torch.ones(2), 1.0, torch.empty(8, dtype=BF16)
    ),
    "task vectors mixed dtypes": lambda: _task_vectors(
        torch.ones(2, 8), torch.ones(8, dtype=BF16), torch.empty(8)
    ),
    "task vectors short base": lambda: _task_vectors(
        torch.ones(2, 8), torch.ones(4), torch.empty(8)
    ),
    "task vectors short output": lambda: _task_vectors(
        torch.ones(2, 8), torch.ones(8), torch.empty(4)
    ),
    "task vectors bfloat16 output": lambda: _task_vectors(
        torch.ones(2, 8, dtype=BF16), torch.ones(8, dtype=BF16), torch.empty(8, dtype=BF16)
    ),
    "task vectors keeps missing": lambda: _task_vectors(
        torch.ones(3, 8), torch.ones(8), torch.empty(8), n=2
    ),
    "task vectors kept array too short": lambda: _task_vectors(
        torch.ones(3, 8), torch.ones(8), torch.empty(8), keeps=native.keep_every([1.0, 1.0])
    ),
    "task vectors overlapping slices": lambda: _task_vectors(
        torch.ones(12).as_strided((2, 8), (4, 1)), torch.ones(8), torch.empty(8)
    ),
    "offset products short base": lambda: native.offset_products(torch.ones(2, 8), torch.ones(4)),
    "l1 norms short model": lambda: native.l1_norms(
        [torch.ones(8), torch.ones(4)], torch.ones(8), _keeps(2)
    ),
    "count digits short base": lambda: native.count_digits(
        torch.ones(8), torch.ones(4), 16, 0, 0, torch.zeros(2, 1 << 16, dtype=torch.int64)
    ),
    "count digits int32 table": lambda: native.count_digits(
        torch.ones(8), torch.ones(8), 16, 0, 0, torch.zeros(2, 1 << 16, dtype=torch.int32)
    ),
    "della ragged rows": lambda: native.della_probabilities(
        torch.ones(9), torch.ones(9), 4, 0.2, 0.4, torch.empty(9)
    ),
    "della short output": lambda: native.della_probabilities(
        torch.ones(8), torch.ones(8), 4, 0.2, 0.4, torch.empty(4)
    ),
    "uniform float64": lambda: native.uniform(Pcg64.seeded(0), torch.empty(8, dtype=torch.float64)),
    "too many models": lambda: native.weighted_sum(
        torch.ones(native.MAX_MODELS + 1, 2), torch.ones(native.MAX_MODELS + 1), 1.0, torch.empty(2)
    ),
    "address zero": lambda: native.narrow_bf16_at(0, 0, 8),
    "negative count": lambda: native.finite_bf16_at(torch.ones(8, dtype=BF16).data_ptr(), -1),
}


@pytest.mark.parametrize("call", CALLS)
def test_binding_refuses_buffers_the_kernel_would_misread(call):
    with pytest.raises(KernelArgumentError):
        CALLS[call]()


def test_bindings_accept_a_stack_of_slices_held_apart():
    held = torch.arange(30, dtype=F32).reshape(3, 10)
    x, base, out = held[:2, 2:7], held[2, 2:7], torch.empty(5)
    _task_vectors(x, base, out)
    expected = base + (x[0] - base) + (x[1] - base)
    assert torch.equal(out, expected)


def test_a_kept_array_of_keep_values_merges_as_a_list_of_them_and_stays_as_it_was():
    """``keep_every`` builds the array the kernel reads once (no copy in and out per call):
    the same sum as a list of Keep values, and reusable for the next call."""
    x, base = torch.randn(3, 40), torch.randn(40)
    weights = [0.5, -1.25, 2.0]
    listed = [Keep(mode=KeepMode.ALL, weight=w) for w in weights]
    kept = native.keep_every(weights)
    options = {"sign": SignVote.TOTAL, "normalize": True, "divide_by": 1.0, "scale": 0.7}
    expected = native.task_vectors(x, base, listed, out=torch.empty(40), **options)
    for _ in range(2):
        merged = native.task_vectors(x, base, kept, out=torch.empty(40), **options)
        assert torch.equal(merged, expected)
    assert [(k.mode, k.weight) for k in kept] == [(KeepMode.ALL, w) for w in weights]


def test_a_contiguous_stack_and_the_same_slices_held_apart_merge_alike():
    held = torch.randn(3, 64)
    apart = torch.randn(3, 80)
    apart[:, 8:72] = held
    base = torch.randn(64)
    together = _task_vectors(held, base, torch.empty(64))
    assert torch.equal(_task_vectors(apart[:, 8:72], base, torch.empty(64)), together)


def test_widen_and_narrow_report_which_pair_they_copy():
    f32, bf16 = torch.empty(4), torch.empty(4, dtype=BF16)
    assert native.widens(bf16, f32) and not native.widens(f32, bf16)
    assert native.narrows(f32, bf16) and not native.narrows(bf16, f32)
