"""The one progress-schedule type: LR factor, SoftAlign's weight and TOnICS' probability."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vlexp.schedules import Ramp, build_schedule, warmup_cosine


@pytest.mark.parametrize("warm, total, floor", [(5, 40, 0.1), (1, 10, 0.0), (10, 10, 0.2)])
def test_warmup_cosine_matches_the_closed_form(warm: int, total: int, floor: float) -> None:
    for step in range(total + 3):
        if step < warm:
            want = (step + 1) / warm
        else:
            t = min(1.0, (step - warm) / max(1, total - warm))
            want = floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))
        assert warmup_cosine(step, warm, total, floor) == pytest.approx(want, abs=1e-12)


def test_every_user_builds_the_same_type() -> None:
    from vlexp.objectives import OBJECTIVES

    obj = OBJECTIVES.build(
        {"name": "softalign", "teacher": "self", "use_student_scale": False,
         "teacher_temperature": 0.1, "alpha_max": 0.4, "ramp_end": 0.5, "schedule": "cosine"}
    )  # fmt: skip
    assert obj.ramp == Ramp("cosine", high=0.4, start=0.0, end=0.5, low=0.0)
    assert build_schedule({"name": "linear", "p_max": 0.9, "end": 0.6}) == Ramp(
        "linear", high=0.9, start=0.0, end=0.6
    )


def test_ramp_is_vectorised_and_float_in_float_out() -> None:
    r = Ramp("linear", high=2.0, start=0.25, end=0.75, low=1.0)
    assert isinstance(r(0.5), float) and r(0.5) == pytest.approx(1.5)
    grid = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(r(grid), [1.0, 1.0, 1.5, 2.0, 2.0])
    assert r(0.75) == 2.0  # exact from `end` on
    with pytest.raises(ValueError, match="start < end"):
        Ramp("cosine", start=0.5, end=0.5)
