"""The fused C kernels (alloykit.native) compute what the torch path computes.

Linear, Model Stock and every task-vector method are run both ways on random tensors, chunked
at random, with many equal magnitudes (ties at the cut-offs): results must be identical, except
where ``l1`` norms or Model Stock's dot products are summed in a different order (equal within
float32 rounding).
"""

from __future__ import annotations

import contextlib
import itertools
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from method_harness import kernel_params

from alloykit import native
from alloykit.methods import get_method
from alloykit.methods.selection import TopK
from alloykit.methods.steps import della_keep_probability
from alloykit.methods.streaming import Chunk

pytestmark = pytest.mark.skipif(
    not native.available() and os.environ.get("ALLOYKIT_REQUIRE_NATIVE") != "1",
    reason="alloykit's C kernels are not built here (no C compiler at install time)",
)

CASES: dict[str, dict] = {
    "task_arithmetic": {"weight": [0.5, 1.0, -0.3]},
    "task_arithmetic scaled": {"weight": [0.5, 1.0, -0.3], "lambda": 0.7},
    "ties": {"density": [0.5, 0.3, 0.9]},
    "ties frequency": {"density": 0.4, "consensus_method": "frequency", "normalize": False},
    "ties l1": {"density": 0.5, "rescale": True, "rescale_mode": "l1"},
    "ties zero": {"density": [0.0, 0.5, 1.0]},
    "dare_linear": {"density": [0.6, 0.2, 1.0]},
    "dare_linear l1": {"density": 0.5, "rescale_mode": "l1"},
    "dare_ties": {"density": 0.4, "weight": [1.0, -0.5, 0.25]},
    "breadcrumbs": {"density": 0.5, "gamma": 0.1},
    "breadcrumbs_ties": {"density": [0.3, 0.5, 0.2], "gamma": [0.2, 0.0, 0.5]},
    "della": {"density": 0.5, "epsilon": 0.2},
    "della l1": {"density": 0.5, "epsilon": 0.2, "rescale_mode": "l1"},
    "della_linear": {"density": 0.4, "epsilon": 0.1},
    "linear": {"weight": [0.5, 1.0, -0.3]},
    "linear sum": {"weight": [0.2, 0.7, 2.5], "normalize": False},
    "linear zero-sum": {"weight": [1.0, -1.0, 0.0]},
    "model_stock": {},
    "model_stock filter_wise": {"filter_wise": True},  # the torch path either way
}
SUMMED = {"ties l1", "dare_linear l1", "della l1", "model_stock"}
"""Cases that sum over the whole tensor (L1 norms, Model Stock's dot products) in another order
than torch: equal within float32 rounding."""


@pytest.fixture(scope="module", autouse=True, params=native.builds() or ["none"])
def kernel_build(request):
    """Every test here runs once per build of the kernels this CPU runs (portable, and
    x86-64-v3 on CPUs with AVX2): both must compute what torch computes."""
    if request.param == "none":
        yield None
        return
    with native.using(request.param):
        yield request.param


def test_the_kernels_are_built() -> None:
    """CI sets ALLOYKIT_REQUIRE_NATIVE=1: there a missing build is a failure, not a skip."""
    assert native.available()


def test_the_fastest_build_this_cpu_runs_is_loaded() -> None:
    """The x86-64-v3 build is chosen wherever the CPU runs it (and was built); the portable
    one elsewhere."""
    loaded = native._load()
    assert loaded is not None
    expected = native.BUILDS[native.builds()[-1]]
    assert Path(loaded._name).name.startswith(expected + ".")


@settings(max_examples=40, deadline=None)
@given(case=st.sampled_from(sorted(CASES)), seed=st.integers(0, 2**31 - 1), stored=st.booleans())
def test_every_build_computes_the_same_bits(case: str, seed: int, stored: bool) -> None:
    """Where torch's sums are in another order (:data:`SUMMED`) the comparison with torch has
    a tolerance; between the builds there is none: vector width must not change a bit."""
    runnable = native.builds()
    if len(runnable) < 2:
        pytest.skip("this CPU runs one build of the kernels")
    name = case.split()[0]
    tensors, base = _fine_tunes(seed, 7, 300)
    if stored:
        tensors, base = tensors.bfloat16(), base.bfloat16()
    kwargs = kernel_params(name, 3, seed=seed, **CASES[case])
    results = []
    for build in runnable:
        with native.using(build):
            results.append(_merge(name, kwargs, tensors, base, 3, stored=stored))
    assert all(torch.equal(results[0], other) for other in results[1:])


def _fine_tunes(seed: int, rows: int, cols: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Three random "fine-tunes" ``[3, rows, cols]`` of a random base, and the base."""
    generator = torch.Generator().manual_seed(seed)
    base = torch.randn((rows, cols), generator=generator)
    return base + 0.1 * torch.randn((3, rows, cols), generator=generator), base


def _merge(
    name: str,
    kwargs: dict,
    tensors: torch.Tensor,
    base: torch.Tensor,
    step: int,
    *,
    stored: bool = False,
):
    """Merge in chunks of ``step`` rows; ``stored``: bfloat16 ``tensors`` fed as stored."""
    method = get_method(name)
    shape = tuple(tensors.shape[1:])
    merge = method.streaming(shape, torch.float32, **kwargs)
    assert merge.reads_stored or not stored

    def chunks() -> list[Chunk]:
        rows = shape[0]
        return [
            Chunk(tensors[:, a : a + step].clone(), base[a : a + step].clone(), a, shape, stored)
            for a in range(0, rows, step)
        ]

    for observe in merge.passes():
        for chunk in chunks():
            observe(chunk)
    return torch.cat([merge.merge(chunk).clone() for chunk in chunks()])


@settings(max_examples=80, deadline=None)
@given(
    case=st.sampled_from(sorted(CASES)),
    seed=st.integers(0, 2**31 - 1),
    rows=st.integers(1, 12),
    cols=st.integers(1, 40),
    coarse=st.booleans(),
    data=st.data(),
)
def test_fused_kernels_equal_the_torch_path(
    case: str, seed: int, rows: int, cols: int, coarse: bool, data
) -> None:
    name = case.split()[0]
    tensors, base = _fine_tunes(seed, rows, cols)
    if coarse:  # many equal magnitudes, zeros among them: ties at the cut-offs
        base, tensors = base.round(decimals=1), tensors.round(decimals=1)
    params = {k: v for k, v in CASES[case].items()}
    kwargs = kernel_params(name, 3, seed=seed, **params)
    step = data.draw(st.integers(1, rows))
    fused = _merge(name, kwargs, tensors, base, step)
    with native.turned_off():
        reference = _merge(name, kwargs, tensors, base, step)
    if case in SUMMED:
        torch.testing.assert_close(fused, reference, rtol=1e-6, atol=1e-6)  # inputs are O(1)
    else:
        assert torch.equal(fused, reference)


@settings(max_examples=60, deadline=None)
@given(
    case=st.sampled_from(sorted(CASES)),
    seed=st.integers(0, 2**31 - 1),
    rows=st.integers(1, 9),
    cols=st.integers(1, 1100),
    fused=st.booleans(),
    data=st.data(),
)
def test_bfloat16_inputs_as_stored_give_what_their_float32_copies_give(
    case: str, seed: int, rows: int, cols: int, fused: bool, data
) -> None:
    """The engine feeds bfloat16 checkpoints' rows as stored to merges that read them so (the
    kernels widen a block at a time; rows up to 1100 wide span several blocks): widening is
    exact, so the result must equal, to the bit, the merge of the float32 copies, with the
    kernels and without them (the torch path widens the chunk first)."""
    name = case.split()[0]
    tensors, base = _fine_tunes(seed, rows, cols)
    tensors, base = tensors.bfloat16(), base.bfloat16()
    kwargs = kernel_params(name, 3, seed=seed, **CASES[case])
    step = data.draw(st.integers(1, rows))
    with contextlib.nullcontext() if fused else native.turned_off():
        stored = _merge(name, kwargs, tensors, base, step, stored=True)
        widened = _merge(name, kwargs, tensors.float(), base.float(), step)
    assert stored.dtype == torch.float32
    assert torch.equal(stored, widened)


def test_l1_factors_agree_where_a_sign_election_cancels_exactly() -> None:
    """Found by the test above: coarse values whose weighted votes cancel exactly. Norms
    summed in float32 by torch and in float64 by C gave factors a last bit apart, which
    flipped elected signs; both paths now sum in float64."""
    tensors, base = _fine_tunes(757, 11, 9)
    base, tensors = base.round(decimals=1), tensors.round(decimals=1)
    kwargs = kernel_params("della", 3, seed=757, **CASES["della l1"])
    fused = _merge("della", kwargs, tensors, base, 1)
    with native.turned_off():
        assert torch.equal(fused, _merge("della", kwargs, tensors, base, 1))


def _measured(name: str, kwargs: dict, tensors: torch.Tensor, base: torch.Tensor, step: int):
    """A streaming merge after its passes, fed chunks of ``step`` rows."""
    shape = tuple(tensors.shape[1:])
    merge = get_method(name).streaming(shape, torch.float32, **kwargs)
    for observe in merge.passes():
        for a in range(0, shape[0], step):
            observe(Chunk(tensors[:, a : a + step].clone(), base[a : a + step].clone(), a, shape))
    return merge


@pytest.mark.parametrize("name", ["dare_linear", "della"])
def test_the_measuring_pass_records_the_survivors_the_merge_keeps(name: str) -> None:
    """With ``l1`` rescaling the fused measuring pass stores each model's survivors as bits;
    they are the entries the torch path keeps, and the merge pass reads them (not new draws)."""
    tensors, base = _fine_tunes(3, 9, 37)  # 37 columns: chunks start mid-byte
    kwargs = kernel_params(name, 3, seed=11, density=0.5, rescale_mode="l1")
    merge = _measured(name, kwargs, tensors, base, step=2)
    with native.turned_off():
        plain = _measured(name, kwargs, tensors, base, step=9)
    for m, (fused, torch_path) in enumerate(zip(merge.sparsifiers, plain.sparsifiers, strict=True)):
        assert fused.kept_bits is not None
        bits = np.unpackbits(fused.kept_bits, bitorder="little")[: base.numel()]
        keep, _ = torch_path._keep(tensors[m] - base)  # the torch path's fresh scan
        assert torch.equal(torch.from_numpy(bits).bool(), keep.reshape(-1).bool())
    for sparsifier in merge.sparsifiers:
        sparsifier.kept_bits[:] = 0  # nothing survives: the merge must give the base back
    merged = merge.merge(Chunk(tensors.clone(), base.clone(), 0, tuple(base.shape)))
    assert torch.equal(merged, base)


def test_survivors_past_the_memory_cap_are_drawn_again(monkeypatch) -> None:
    """Masks over ``KEPT_BITS_BYTES`` (all models together) are not kept: the merge pass
    draws again, with the same result."""
    from alloykit.methods import task_vectors, thinning

    tensors, base = _fine_tunes(5, 6, 40)
    kwargs = kernel_params("dare_ties", 3, seed=2, density=0.4, rescale_mode="l1")
    kept = _merge("dare_ties", kwargs, tensors, base, 2)
    monkeypatch.setattr(thinning, "KEPT_BITS_BYTES", 2 * 30)  # room for two models' 30 bytes
    monkeypatch.setattr(task_vectors, "KEPT_BITS_BYTES", 2 * 30)
    merge = _measured("dare_ties", kwargs, tensors, base, 2)
    assert all(s.kept_bits is None for s in merge.sparsifiers)
    assert torch.equal(_merge("dare_ties", kwargs, tensors, base, 2), kept)


@pytest.mark.parametrize("sizes", [[7, 1000], [2, 2, 5], [1, 1, 1, 64]])
def test_draws_continue_numpys_pcg64_stream(sizes: list[int]) -> None:
    generator = np.random.Generator(np.random.PCG64(12345))
    expected = np.concatenate([generator.random(n, dtype=np.float32) for n in sizes])
    state = native.Pcg64.seeded(12345)
    drawn = torch.cat([native.uniform(state, torch.empty(n)) for n in sizes])
    assert np.array_equal(drawn.numpy(), expected)


@pytest.mark.parametrize("width", [2, 3, 17, 2048])
def test_della_probabilities_equal_the_torch_ranking(width: int) -> None:
    generator = torch.Generator().manual_seed(width)
    base = torch.randn(5, width, generator=generator).round(decimals=1)
    x = base + torch.randn(5, width, generator=generator).round(decimals=1)
    expected = della_keep_probability(x - base, 0.5, 0.2)
    got = native.della_probabilities(x, base, width, 2 * 0.2, 0.5 - 0.2, torch.empty(5, width))
    assert torch.equal(got, expected)


@settings(max_examples=60, deadline=None)
@given(
    width=st.integers(2, 300),
    exponents=st.lists(st.integers(-60, 8), min_size=1, max_size=6),
    zeros=st.floats(0.0, 0.9),
    seed=st.integers(0, 2**16),
)
def test_della_probabilities_rank_magnitudes_of_any_spread_as_torch_does(
    width: int, exponents: list[int], zeros: float, seed: int
) -> None:
    """Magnitudes many octaves apart (below the kernel's eight-octave bucket range), exact
    zeros and repeated values: every rank equals the torch ranking's."""
    generator = torch.Generator().manual_seed(seed)
    rows = 3
    scale = torch.tensor([2.0**e for e in exponents])
    picks = torch.randint(len(exponents), (rows, width), generator=generator)
    delta = torch.randn(rows, width, generator=generator).round(decimals=2) * scale[picks]
    delta[torch.rand(rows, width, generator=generator) < zeros] = 0.0
    base = torch.zeros(rows, width)
    expected = della_keep_probability(delta, 0.5, 0.2)
    got = native.della_probabilities(delta, base, width, 0.4, 0.3, torch.empty(rows, width))
    assert torch.equal(got, expected)


def test_della_probabilities_of_rows_too_disordered_for_the_bucket_pass() -> None:
    """Distinct magnitudes within one 1/128-octave bucket, in descending order: the insertion
    sort would need width²/2 moves, so the kernel sorts such rows by radix instead."""
    width = 4096
    descending = 1.0 + torch.arange(width, 0, -1, dtype=torch.float32) * 2.0**-23
    delta = torch.stack([descending, -descending.flip(0), descending.roll(7)])
    base = torch.zeros_like(delta)
    expected = della_keep_probability(delta, 0.5, 0.2)
    got = native.della_probabilities(delta, base, width, 0.4, 0.3, torch.empty(3, width))
    assert torch.equal(got, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_offset_products_are_the_task_vectors_gram_matrix(dtype: torch.dtype) -> None:
    """Model Stock's statistics: squared norms, then pair products in combinations order, of
    four task vectors that span several blocks and lie apart in a larger buffer (a held
    stack's slices)."""
    generator = torch.Generator().manual_seed(5)
    base = torch.randn(2107, generator=generator).to(dtype)
    held = torch.zeros(4, 2200, dtype=dtype)
    held[:, :2107] = (base.float() + 0.1 * torch.randn(4, 2107, generator=generator)).to(dtype)
    x = held[:, :2107]
    deltas = x.double() - base.double()
    pairs = itertools.combinations(range(4), 2)
    expected = [float(d @ d) for d in deltas] + [float(deltas[i] @ deltas[j]) for i, j in pairs]
    got = native.offset_products(x, base)
    assert got == pytest.approx(expected, rel=1e-6)


def test_digit_counts_equal_bincount() -> None:
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(10_001, generator=generator)
    x = base + torch.randn(10_001, generator=generator)
    bits = (x - base).abs().view(torch.int32)
    counts = torch.zeros(2, 1 << 16, dtype=torch.int64)  # two tables, added up
    native.count_digits(x, base, 16, 0, 0, counts)
    assert torch.equal(counts.sum(0), torch.bincount(bits >> 16, minlength=1 << 16))
    prefix = int(bits[0] >> 16)
    low = torch.zeros(2, 1 << 16, dtype=torch.int64)
    native.count_digits(x, base, 0, 1, prefix, low)
    inside = bits[(bits >> 16) == prefix] & 0xFFFF
    assert torch.equal(low.sum(0), torch.bincount(inside, minlength=1 << 16))


def test_top_k_counted_by_the_kernels_selects_as_torch_does() -> None:
    generator = torch.Generator().manual_seed(1)
    base = torch.randn(4000, generator=generator).round(decimals=2)
    x = base + torch.randn(4000, generator=generator).round(decimals=2)
    magnitudes = (x - base).abs()
    fused, plain = TopK(4000, [1234], torch.float32), TopK(4000, [1234], torch.float32)
    for _ in range(fused.levels):
        fused.count_deltas(x, base)
        fused.settle()
        plain.count(magnitudes)
        plain.settle()
    assert fused.native_cut(0) == plain.native_cut(0)
