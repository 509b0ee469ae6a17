"""Golden values and invariants for ram, ramplus_tl (arXiv:2601.13572) and arcee_fusion,
computed here entry by entry from their definitions (mergekit's, for the details)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from method_harness import run

from alloykit.methods import get_method
from alloykit.methods.streaming import Chunk

SETTINGS = settings(max_examples=25, deadline=None)
BASE = [1.0, -2.0, 0.5, 3.0, 0.0, 4.0]
DELTAS = [
    [0.5, 0.0, 0.25, -1.0, 0.0, 0.0],
    [0.25, 0.75, 0.0, -0.5, 0.0, 0.0],
    [0.0, 0.0, 0.0, 1.5, 2.0, 0.0],
]
MODELS = [[b + d for b, d in zip(BASE, row, strict=True)] for row in DELTAS]


def ram_reference(
    models: list[list[float]], base: list[float], epsilon: float, scales: list[float] | None = None
) -> list[float]:
    """Entries one model changed keep that model's change (times its scale); entries several
    changed take the mean of their changes; unchanged entries (|delta| <= epsilon) are zero."""
    deltas = [[m - b for m, b in zip(model, base, strict=True)] for model in models]
    scales = scales or [1.0] * len(models)
    out = []
    for j, origin in enumerate(base):
        changed = [i for i, d in enumerate(deltas) if abs(d[j]) > epsilon]
        if len(changed) == 1:
            out.append(origin + deltas[changed[0]][j] * scales[changed[0]])
        elif changed:
            out.append(origin + sum(deltas[i][j] for i in changed) / len(changed))
        else:
            out.append(origin)
    return out


def ramplus_scales(
    models: list[list[float]], base: list[float], r: float, alpha: float, epsilon: float
) -> list[float]:
    """Each model's unique-update scale 1 + r·min(max(shared/unique, 0), alpha)."""
    deltas = [[m - b for m, b in zip(model, base, strict=True)] for model in models]
    counts = [sum(abs(d[j]) > epsilon for d in deltas) for j in range(len(base))]
    scales = []
    for d in deltas:
        shared = sum(abs(x) > epsilon and c > 1 for x, c in zip(d, counts, strict=True))
        unique = sum(abs(x) > epsilon and c == 1 for x, c in zip(d, counts, strict=True))
        scales.append(1 + r * min(max(shared / max(unique, epsilon), 0.0), alpha))
    return scales


def close(actual: torch.Tensor, expected: list[float]) -> None:
    torch.testing.assert_close(actual, torch.tensor(expected), rtol=1e-6, atol=1e-6)


def test_ram_averages_shared_changes_and_keeps_unique_ones_whole() -> None:
    # entry 0: models 0 and 1 → mean 0.375; entry 1: only model 1; entry 3: all three
    # → mean 0; entry 4: only model 2; entry 5: nobody
    expected = [1.375, -1.25, 0.75, 3.0, 2.0, 4.0]
    assert ram_reference(MODELS, BASE, 1e-5) == expected
    close(run("ram", MODELS, BASE), expected)


def test_ram_counts_changes_at_most_epsilon_as_unchanged() -> None:
    # with epsilon 0.3, 0.25 is no change: entry 0 is model 0's alone, entry 2 nobody's
    expected = ram_reference(MODELS, BASE, 0.3)
    assert expected[0] == 1.5 and expected[2] == 0.5
    close(run("ram", MODELS, BASE, epsilon=0.3), expected)


def test_ramplus_scales_unique_changes_by_the_shared_to_unique_ratio() -> None:
    scales = ramplus_scales(MODELS, BASE, r=0.5, alpha=1.5, epsilon=1e-5)
    # model 0: shared 2 (entries 0, 3), unique 1 (entry 2) → ratio 2, capped at 1.5
    # model 1: shared 2, unique 1 (entry 1) → the same; model 2: shared 1, unique 1 → ratio 1
    assert scales == [1.75, 1.75, 1.5]
    expected = ram_reference(MODELS, BASE, 1e-5, scales)
    assert expected[2] == 0.5 + 0.25 * 1.75 and expected[4] == 2.0 * 1.5
    close(run("ramplus_tl", MODELS, BASE, r=0.5, alpha=1.5), expected)


def test_ramplus_of_a_model_with_no_unique_change_divides_by_epsilon() -> None:
    models = [[2.0, 3.0], [2.0, 5.0]]  # both change both entries: unique = 0, ratio huge
    scales = ramplus_scales(models, [1.0, 1.0], r=0.1, alpha=0.2, epsilon=1e-5)
    assert scales == [pytest.approx(1.02), pytest.approx(1.02)]
    close(run("ramplus_tl", models, [1.0, 1.0]), [2.0, 4.0])


def test_ramplus_counts_over_the_whole_tensor_when_merged_in_chunks() -> None:
    generator = torch.Generator().manual_seed(3)
    base = torch.randn(6, 4, generator=generator)
    models = base + torch.randn(3, 6, 4, generator=generator) * (
        torch.rand(3, 6, 4, generator=generator) > 0.6
    )
    whole = run("ramplus_tl", models, base, r=0.7, alpha=3.0)
    merge = get_method("ramplus_tl").streaming(
        (6, 4), torch.float32, r=0.7, alpha=3.0, epsilon=1e-5
    )
    chunks = [(0, 2), (2, 5), (5, 6)]
    for observe in merge.passes():
        for start, stop in chunks:
            observe(Chunk(models[:, start:stop].clone(), base[start:stop], start, (6, 4)))
    rows = [
        merge.merge(Chunk(models[:, start:stop].clone(), base[start:stop], start, (6, 4)))
        for start, stop in chunks
    ]
    torch.testing.assert_close(torch.cat(rows), whole, rtol=0, atol=0)


def fusion_reference(other: list[list[float]], base: list[list[float]]) -> list[list[float]]:
    """Keep other's value where |other − base| · KL(softmax rows) ≥ median + 1.5·IQR, with
    quantiles read at sorted index floor(q·(n − 1))."""

    def softmax(row: list[float]) -> list[float]:
        top = max(row)
        exps = [math.exp(x - top) for x in row]
        return [e / sum(exps) for e in exps]

    scores = []
    for row_other, row_base in zip(other, base, strict=True):
        p = [x + 1e-8 for x in softmax(row_other)]
        q = [x + 1e-8 for x in softmax(row_base)]
        divergence = sum(a * math.log(a / b) for a, b in zip(p, q, strict=True))
        scores.append([abs(a - b) * divergence for a, b in zip(row_other, row_base, strict=True)])
    ordered = sorted(x for row in scores for x in row)

    def quantile(q: float) -> float:
        return ordered[int(q * (len(ordered) - 1))]

    fence = quantile(0.5) + 1.5 * (quantile(0.75) - quantile(0.25))
    return [
        [o if s >= fence else b for o, b, s in zip(ro, rb, rs, strict=True)]
        for ro, rb, rs in zip(other, base, scores, strict=True)
    ]


def test_arcee_fusion_keeps_only_the_outlying_important_changes() -> None:
    base = [[0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0], [0.5, -0.5, 0.5, -0.5]]
    other = [[0.1, 0.0, 0.0, 0.0], [1.0, 3.0, 1.0, 1.1], [0.5, -0.5, 0.6, -0.5]]
    expected = fusion_reference(other, base)
    # 8 of 12 entries are unchanged, so the fence is 1.5 × the smallest importance: the
    # changes in row 1, whose softmax moves most, pass it; rows 0 and 2 keep the base's values
    assert expected == [base[0], other[1], base[2]]
    torch.testing.assert_close(run("arcee_fusion", [other], base), torch.tensor(expected))


def test_arcee_fusion_matches_the_definition_on_random_rows() -> None:
    generator = torch.Generator().manual_seed(7)
    base = torch.randn(8, 16, generator=generator)
    other = base + torch.randn(8, 16, generator=generator) * 0.3
    expected = fusion_reference(other.double().tolist(), base.double().tolist())
    out = run("arcee_fusion", other[None], base)
    torch.testing.assert_close(out, torch.tensor(expected, dtype=torch.float32))
    assert 0 < int((out != base).sum()) < out.numel()


def test_arcee_fusion_of_a_vector_uses_one_divergence_for_the_tensor() -> None:
    base, other = [0.0, 1.0, 2.0, 3.0, 4.0], [0.0, 1.0, 2.0, 3.0, 9.0]
    expected = fusion_reference([other], [base])[0]
    close(run("arcee_fusion", [other], base), expected)


tensors = st.integers(0, 2**31 - 1).map(
    lambda seed: torch.randn((4, 3, 5), generator=torch.Generator().manual_seed(seed))
)


@SETTINGS
@given(tensors, st.sampled_from(["ram", "ramplus_tl"]))
def test_identical_models_are_a_fixed_point_of_ram(stack: torch.Tensor, name: str) -> None:
    base, model = stack[0], stack[1]
    out = run(name, torch.stack([model] * 3), base)
    torch.testing.assert_close(out, model, rtol=1e-6, atol=1e-6)


@SETTINGS
@given(tensors, st.sampled_from(["ram", "ramplus_tl"]))
def test_models_with_disjoint_changes_are_summed_by_ram(stack: torch.Tensor, name: str) -> None:
    """No entry changed by two models: every change is unique and kept whole (RAM+ scales
    by 1, as no model shares an entry)."""
    base = stack[0]
    mask = torch.arange(base.numel()).reshape(base.shape) % 3
    deltas = torch.stack([stack[1] * (mask == i) for i in range(3)])
    out = run(name, base + deltas, base)
    torch.testing.assert_close(out, base + deltas.sum(0), rtol=1e-6, atol=1e-6)


@SETTINGS
@given(tensors)
def test_arcee_fusion_of_the_base_with_itself_is_the_base(stack: torch.Tensor) -> None:
    torch.testing.assert_close(run("arcee_fusion", stack[0][None], stack[0]), stack[0])


@SETTINGS
@given(tensors)
def test_arcee_fusion_takes_each_entry_from_the_base_or_adds_the_whole_change(
    stack: torch.Tensor,
) -> None:
    base, other = stack[0], stack[1]
    out = run("arcee_fusion", other[None], base)
    assert bool(((out == base) | (out == base + (other - base))).all())
