"""Batches by length: every row once, no batch over the batch size, and padding traded against
the number of passes (rows of close lengths share a pass, far-apart ones do not)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from alloykit.evaluate.generation import PASS_TOKENS, length_batches


def batches_of(shapes: list[tuple[int, ...]], batch_size: int) -> list[list[int]]:
    return length_batches(range(len(shapes)), shapes.__getitem__, batch_size)


@settings(max_examples=200, deadline=None)
@given(
    shapes=st.lists(st.tuples(st.integers(1, 40), st.integers(0, 12)), min_size=0, max_size=80),
    batch_size=st.integers(1, 32),
)
def test_every_row_lands_once_in_a_batch_no_larger_than_the_batch_size(
    shapes: list[tuple[int, int]], batch_size: int
) -> None:
    batches = batches_of(shapes, batch_size)
    assert sorted(i for batch in batches for i in batch) == list(range(len(shapes)))
    assert all(0 < len(batch) <= batch_size for batch in batches)
    flat = [shapes[i] for batch in batches for i in batch]
    assert flat == sorted(flat), "batches hold consecutive shapes"


def test_rows_of_close_lengths_share_a_pass() -> None:
    shapes = [(8,)] * 10 + [(9,)] * 10
    assert [len(b) for b in batches_of(shapes, 64)] == [20]


def test_rows_far_apart_in_length_take_passes_of_their_own() -> None:
    short, long = 10, 10 + 2 * PASS_TOKENS
    shapes = [(long,)] * 10 + [(short,)] * 10
    assert batches_of(shapes, 64) == [list(range(10, 20)), list(range(10))]


def test_a_long_answer_is_a_length_like_a_long_prompt() -> None:
    shapes = [(8, 1)] * 10 + [(8, 1 + 2 * PASS_TOKENS)] * 10
    assert [len(b) for b in batches_of(shapes, 64)] == [10, 10]


def test_a_run_longer_than_the_batch_size_is_split_evenly() -> None:
    assert [len(b) for b in batches_of([(5,)] * 10, 4)] == [3, 3, 4]
