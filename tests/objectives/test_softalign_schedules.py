"""Weight ramps of vlexp.schedules against hand-computed values."""

from __future__ import annotations

import math

import pytest

from vlexp.schedules import RAMP_KINDS, build_ramp, weight_ramp

GRID = [i / 200 for i in range(201)]


def test_linear_hand_values() -> None:
    r = weight_ramp("linear", max_value=0.6, end=0.5)
    assert r(0.0) == 0.0
    assert r(0.25) == pytest.approx(0.3)
    assert r(0.5) == 0.6  # exactly the max at the configured point
    assert r(0.9) == 0.6
    assert r(1.0) == 0.6


def test_cosine_hand_values() -> None:
    r = weight_ramp("cosine", max_value=0.8, end=0.4)
    assert r(0.0) == 0.0
    # halfway through the ramp the half-cosine is at half the height
    assert r(0.2) == pytest.approx(0.4)
    # a quarter of the way: 0.8 * (1 - cos(pi / 4)) / 2
    assert r(0.1) == pytest.approx(0.8 * (1 - math.cos(math.pi / 4)) / 2)
    assert r(0.4) == 0.8
    assert r(1.0) == 0.8


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_zero_at_start_max_at_end_monotonic(kind: str) -> None:
    r = weight_ramp(kind, max_value=0.5, end=0.7)
    values = [r(t) for t in GRID]
    assert values[0] == 0.0
    assert all(b >= a for a, b in zip(values, values[1:]))
    first_max = next(t for t, v in zip(GRID, values) if v == 0.5)
    assert first_max == pytest.approx(0.7)


def test_delayed_start_and_min_value() -> None:
    r = weight_ramp("linear", max_value=1.0, start=0.2, end=0.6, min_value=0.1)
    assert r(0.0) == pytest.approx(0.1)
    assert r(0.2) == pytest.approx(0.1)
    assert r(0.4) == pytest.approx(0.55)
    assert r(0.6) == 1.0


def test_constant_and_clamping() -> None:
    assert weight_ramp("constant", max_value=0.3)(0.0) == 0.3
    r = weight_ramp("linear", max_value=2.0)
    assert r(-1.0) == 0.0
    assert r(3.0) == 2.0  # weights are not limited to [0, 1]


def test_build_ramp() -> None:
    assert build_ramp("cosine") == weight_ramp("cosine")
    assert build_ramp({"kind": "linear", "max_value": 0.5, "end": 0.3})(0.3) == 0.5
    assert set(RAMP_KINDS) == {"linear", "cosine", "constant"}
    with pytest.raises(TypeError, match="unknown option"):
        build_ramp({"kind": "linear", "peak": 1.0})


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"kind": "exp"}, "kind"),
        ({"start": 0.5, "end": 0.5}, "start < end"),
        ({"end": 1.5}, "start < end"),
        ({"max_value": float("nan")}, "finite"),
    ],
)
def test_invalid_ramps(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        weight_ramp(**kwargs)


def test_nan_progress_is_an_error() -> None:
    with pytest.raises(ValueError, match="NaN"):
        weight_ramp()(float("nan"))
