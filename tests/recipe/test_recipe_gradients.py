"""ParamSetting.resolve: gradients over depth and name filters, as mergekit defines them."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alloykit.recipe import ConditionalValue, ParamSetting

ATTN = "model.layers.3.self_attn.q_proj.weight"
MLP = "model.layers.3.mlp.up_proj.weight"
NORM = "model.norm.weight"


def setting(*entries: ConditionalValue) -> ParamSetting:
    return ParamSetting(entries, "parameters.x")


def gradient(*values: float | bool | str) -> ParamSetting:
    return setting(ConditionalValue(tuple(values)))


def test_scalar_is_the_same_for_every_tensor_and_depth():
    assert setting(ConditionalValue(0.4)).resolve(ATTN, 0.7) == 0.4


@pytest.mark.parametrize(
    ("t", "expected"),
    [
        (0.0, 0.0),
        (0.125, 0.25),  # halfway between knots 0 and 1
        (0.25, 0.5),  # on knot 1
        (0.6, 0.46),  # 40% from knot 2 (0.3) to knot 3 (0.7)
        (0.9, 0.88),  # 60% from knot 3 (0.7) to knot 4 (1.0)
        (1.0, 1.0),
    ],
)
def test_numeric_gradient_interpolates_linearly_between_neighbouring_knots(t, expected):
    assert gradient(0, 0.5, 0.3, 0.7, 1).resolve(ATTN, t) == pytest.approx(expected)


def test_two_knot_gradient_is_a_straight_line():
    assert gradient(1.0, 0.0).resolve(ATTN, 0.3) == pytest.approx(0.7)


def test_layer_of_a_forty_layer_slerp_reads_the_gradient_at_its_depth():
    # layer 13 of 40: t = 13/39 = 1/3, a third of the way from knot 1 (0.5) to knot 2 (0.3)
    assert gradient(0, 0.5, 0.3, 0.7, 1).resolve(ATTN, 13 / 39) == pytest.approx(0.5 - 0.2 / 3)


def test_boolean_gradient_picks_the_knot_at_or_below_t():
    flags = gradient(False, True, False)
    assert [flags.resolve(ATTN, t) for t in (0.0, 0.49, 0.5, 0.99, 1.0)] == [
        False,
        False,
        True,
        True,
        False,
    ]


def test_string_gradient_picks_without_interpolating():
    choice = gradient("sum", "count")
    assert [choice.resolve(ATTN, t) for t in (0.0, 0.99, 1.0)] == ["sum", "sum", "count"]


def test_first_matching_filter_wins():
    t_setting = setting(
        ConditionalValue(0.1, "self_attn"), ConditionalValue(0.2, "layers.3"), ConditionalValue(0.3)
    )
    assert t_setting.resolve(ATTN, 0.0) == 0.1
    assert t_setting.resolve(MLP, 0.0) == 0.2
    assert t_setting.resolve(NORM, 0.0) == 0.3


def test_entry_without_filter_matches_everything_even_before_filtered_entries():
    t_setting = setting(ConditionalValue(0.9), ConditionalValue(0.1, "self_attn"))
    assert t_setting.resolve(ATTN, 0.0) == 0.9


def test_filter_is_a_plain_substring_not_a_pattern():
    t_setting = setting(ConditionalValue(0.1, "layers.1"), ConditionalValue(0.5, "q_*"))
    assert t_setting.resolve("model.layers.12.mlp.up_proj.weight", 0.0) == 0.1
    assert t_setting.resolve("model.layers.2.self_attn.q_proj.weight", 0.0) is None


def test_star_filter_matches_every_tensor():
    assert setting(ConditionalValue(0.7, "*")).resolve(NORM, 0.0) == 0.7


def test_no_matching_entry_resolves_to_none():
    assert setting(ConditionalValue(0.1, "self_attn")).resolve(MLP, 0.5) is None


def test_filtered_entry_never_matches_an_empty_tensor_name():
    assert setting(ConditionalValue(0.1, "")).resolve("", 0.0) is None
    assert setting(ConditionalValue(0.1, "")).resolve(NORM, 0.0) == 0.1


def test_filtered_gradient_is_read_at_t():
    t_setting = setting(ConditionalValue((0.0, 1.0), "mlp"), ConditionalValue(0.5))
    assert t_setting.resolve(MLP, 0.25) == pytest.approx(0.25)
    assert t_setting.resolve(ATTN, 0.25) == 0.5


finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
depth = st.floats(min_value=0.0, max_value=1.0)


@given(value=finite, t=depth)
def test_gradient_of_one_value_is_constant(value, t):
    assert gradient(value).resolve(ATTN, t) == value


@given(values=st.lists(finite, min_size=2, max_size=12), data=st.data())
def test_gradient_returns_its_knots_at_the_knots(values, data):
    index = data.draw(st.integers(min_value=0, max_value=len(values) - 1))
    t = index / (len(values) - 1)
    got = gradient(*values).resolve(ATTN, t)
    assert math.isclose(got, values[index], rel_tol=1e-9, abs_tol=1e-6)


@given(values=st.lists(finite, min_size=1, max_size=12), t=depth)
def test_gradient_stays_within_its_neighbouring_knots(values, t):
    got = gradient(*values).resolve(ATTN, t)
    assert min(values) - 1e-6 <= got <= max(values) + 1e-6
