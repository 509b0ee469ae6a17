"""Golden values for PCB-Merging, computed from the paper's definition with plain floats."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from method_harness import run

from alloykit.methods.pcb import clip_outliers

SETTINGS = settings(max_examples=25, deadline=None)


def pcb_reference(taus: list[list[float]], ratio: float, scale: float) -> list[float]:
    """Arxiv:2410.02396, eqs. 2-7, on task vectors short enough that no outlier is clipped."""
    n, d = len(taus), len(taus[0])
    totals = [sum(tau[j] for tau in taus) for j in range(d)]
    scores = []
    for tau in taus:
        magnitudes = [abs(x) for x in tau]
        low, high = min(magnitudes), max(magnitudes)
        intra = [math.exp(n * ((m - low) / (high - low)) ** 2) for m in magnitudes]
        inter = [math.tanh(x * t) for x, t in zip(tau, totals, strict=True)]
        importance = [a * b for a, b in zip(intra, inter, strict=True)]
        cut = sorted(importance)[int(d * (1 - ratio))]
        top = max(importance)
        scores.append([max(x - cut, 0.0) / (top - cut) for x in importance])
    merged = []
    for j in range(d):
        total = sum(score[j] for score in scores)
        weighted = sum(tau[j] * score[j] for tau, score in zip(taus, scores, strict=True))
        merged.append(scale * weighted / total if total > 0 else 0.0)
    return merged


TAUS = [[1.0, -2.0, 3.0, 0.5, 0.25], [2.0, 1.0, -1.0, 0.5, -0.75], [0.5, -1.5, 2.0, -1.0, 0.1]]


@pytest.mark.parametrize("ratio", [0.5, 0.75, 1.0])
def test_pcb_weights_entries_by_intra_and_inter_task_balance(ratio: float) -> None:
    base = [0.5, -0.5, 1.0, 0.0, 2.0]
    models = [[b + x for b, x in zip(base, tau, strict=True)] for tau in TAUS]
    out = run("pcb", models, base, pcb_ratio=ratio, **{"lambda": 0.8})
    expected = [b + x for b, x in zip(base, pcb_reference(TAUS, ratio, 0.8), strict=True)]
    torch.testing.assert_close(out, torch.tensor(expected), rtol=1e-5, atol=1e-6)


def test_pcb_merges_matrices_as_flat_vectors() -> None:
    base = torch.zeros(2, 3)
    taus = [[1.0, -2.0, 3.0, 0.5, 0.25, -1.0], [2.0, 1.0, -1.0, 0.5, -0.75, 2.0]]
    out = run("pcb", torch.tensor(taus).reshape(2, 2, 3), base, pcb_ratio=0.5)
    expected = torch.tensor(pcb_reference(taus, 0.5, 1.0)).reshape(2, 3)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


def test_pcb_weights_scale_each_task_vector_first() -> None:
    scaled = [[2 * x for x in TAUS[0]], [-x for x in TAUS[1]], TAUS[2]]
    out = run("pcb", TAUS, [0.0] * 5, weight=[2.0, -1.0, 1.0], pcb_ratio=0.75)
    torch.testing.assert_close(out, torch.tensor(pcb_reference(scaled, 0.75, 1.0)))


def test_pcb_at_ratio_zero_keeps_the_base() -> None:
    base = [1.0, 2.0, 3.0, 4.0, 5.0]
    torch.testing.assert_close(run("pcb", TAUS, base, pcb_ratio=0.0), torch.tensor(base))


def test_pcb_clips_the_extreme_hundredth_of_a_percent_of_magnitudes() -> None:
    magnitudes = torch.arange(20_000, dtype=torch.float32)[None].flip(1)
    clipped = clip_outliers(magnitudes, 1e-4)[0]
    assert clipped.max() == 19_997 and clipped.min() == 2
    assert torch.equal(clipped[3:-3], magnitudes[0, 3:-3])


@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), ratio=st.floats(0.05, 1.0))
def test_pcb_of_identical_models_keeps_or_drops_each_entry(seed: int, ratio: float) -> None:
    generator = torch.Generator().manual_seed(seed)
    base, model = torch.randn((2, 6, 5), generator=generator)
    out = run("pcb", torch.stack([model] * 3), base, pcb_ratio=ratio)
    kept = torch.isclose(out, model, rtol=1e-5, atol=1e-6)
    dropped = torch.isclose(out, base, rtol=1e-5, atol=1e-6)
    assert bool((kept | dropped).all())
    assert bool(kept.any())


@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), order=st.permutations([0, 1, 2]))
def test_pcb_does_not_depend_on_model_order(seed: int, order: list[int]) -> None:
    base, *models = torch.randn((4, 7, 3), generator=torch.Generator().manual_seed(seed))
    out = run("pcb", models, base, pcb_ratio=0.3)
    permuted = run("pcb", [models[i] for i in order], base, pcb_ratio=0.3)
    torch.testing.assert_close(permuted, out, rtol=1e-5, atol=1e-6)
