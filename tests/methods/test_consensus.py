"""Golden values for consensus merging with TALL masks (arXiv:2405.07813), by hand."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from method_harness import run

SETTINGS = settings(max_examples=25, deadline=None)

TAUS = [[1.0, 0.1, -2.0, 0.5], [0.8, 0.1, 2.0, -0.1], [-0.2, 3.0, 0.1, 0.3]]


def held_by(taus: list[list[float]], mask_lambda: float) -> list[int]:
    """How many TALL masks hold each entry: |tau_t| > lambda * |sum - tau_t| (eq. 3)."""
    counts = []
    for j in range(len(taus[0])):
        total = sum(tau[j] for tau in taus)
        counts.append(sum(abs(tau[j]) > mask_lambda * abs(total - tau[j]) for tau in taus))
    return counts


def test_tall_mask_counts_match_the_definition() -> None:
    # entry 0: 1 > .5*.6, .8 > .5*.8, .2 > .5*1.8? no -> 2; entry 1: only task 3 -> 1;
    # entry 2: 2 > .5*2.1, 2 > .5*1.9, .1 > 0 -> 3; entry 3: .5 > .1, .1 > .4? no, .3 > .2 -> 2
    assert held_by(TAUS, 0.5) == [2, 1, 3, 2]


def test_consensus_on_task_arithmetic_zeroes_entries_held_by_fewer_than_k_tasks() -> None:
    base = [0.5, -0.5, 1.0, 2.0]
    models = [[b + x for b, x in zip(base, tau, strict=True)] for tau in TAUS]
    out = run(
        "consensus", models, base, base_method="task_arithmetic", mask_lambda=0.5,
        consensus_k=2, **{"lambda": 0.5},
    )  # fmt: skip
    sums = [sum(tau[j] for tau in TAUS) for j in range(4)]
    expected = [
        b + (0.5 * s if c >= 2 else 0.0)
        for b, s, c in zip(base, sums, held_by(TAUS, 0.5), strict=True)
    ]
    torch.testing.assert_close(out, torch.tensor(expected))


def test_consensus_on_ties_masks_the_ties_merge() -> None:
    """TIES at density 0.5 keeps each task's two largest entries: [1, -2], [.8, 2] (entries 0,
    2) and [3, .3] (entries 1, 3); elected signs by total mass: +, +, sign(-2 + 2) = + , +;
    disjoint sums (the reference's): 1.8, 3, 2, 0.3 (entry 2: only the +2 agrees). Consensus
    (lambda .5, k 2) drops entry 1, held by one mask."""
    out = run(
        "consensus", TAUS, [0.0] * 4, base_method="ties", density=0.5, mask_lambda=0.5,
        consensus_k=2,
    )  # fmt: skip
    torch.testing.assert_close(out, torch.tensor([1.8, 0.0, 2.0, 0.3]))


def random_tensors(seed: int, count: int) -> torch.Tensor:
    return torch.randn((count, 5, 4), generator=torch.Generator().manual_seed(seed))


@SETTINGS
@given(
    seed=st.integers(0, 2**31 - 1),
    density=st.floats(0.1, 1.0),
    scale=st.floats(-2, 2),
    weights=st.lists(st.floats(0.1, 3.0), min_size=3, max_size=3),
)
def test_consensus_of_zero_tasks_is_the_plain_merge(seed, density, scale, weights) -> None:
    base, *models = random_tensors(seed, 4)
    common = {"weight": weights, "lambda": scale}
    out = run("consensus", models, base, base_method="ties", consensus_k=0, density=density,
              **common)  # fmt: skip
    expected = run("ties", models, base, density=density, normalize=False, **common)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    out = run("consensus", models, base, base_method="task_arithmetic", consensus_k=0, **common)
    torch.testing.assert_close(out, run("task_arithmetic", models, base, **common))


@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), k=st.integers(0, 3), order=st.permutations([0, 1, 2]))
def test_consensus_does_not_depend_on_model_order(seed: int, k: int, order) -> None:
    base, *models = random_tensors(seed, 4)
    out = run("consensus", models, base, consensus_k=k)
    torch.testing.assert_close(
        run("consensus", [models[i] for i in order], base, consensus_k=k), out
    )


@SETTINGS
@given(seed=st.integers(0, 2**31 - 1))
def test_identical_models_are_a_fixed_point_of_consensus_task_arithmetic(seed: int) -> None:
    """Identical task vectors: each mask holds every entry where |tau| > lambda * 2|tau|,
    true for lambda < 1/2; with k = 3 and lambda = 1/3 the sum / 3 is the model."""
    base, model = random_tensors(seed, 2)
    out = run(
        "consensus", torch.stack([model] * 3), base, base_method="task_arithmetic",
        mask_lambda=0.3, consensus_k=3, **{"lambda": 1 / 3},
    )  # fmt: skip
    torch.testing.assert_close(out, model, rtol=1e-5, atol=1e-6)
