"""The one progress-schedule type: LR factor, SoftAlign's weight and TOnICS' probability."""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import pytest

from vlexp.schedules import Ramp, build_schedule, lr_factor, warmup_cosine


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


# ------------------------------------------------------------------ LR schedules (optim.schedule)
@pytest.mark.parametrize(
    "step, want",
    [
        (0, 0.1), (4, 0.5), (9, 1.0),  # warm-up: (step + 1) / 10
        (10, 1.0), (79, 1.0), (80, 1.0),  # constant until the cool-down starts at 100 - 20
        (85, 0.1 + 0.9 * 0.75), (90, 0.55), (95, 0.325), (99, 0.1 + 0.9 * 0.05),
        (100, 0.1), (130, 0.1),  # the floor from the end on
    ],
)  # fmt: skip
def test_const_cooldown_at_hand_computed_steps(step: int, want: float) -> None:
    got = lr_factor(step, "const_cooldown", 10, 100, floor=0.1, cooldown_steps=20)
    assert got == pytest.approx(want, abs=1e-12)


def test_power_cooldown_and_const_at_hand_computed_steps() -> None:
    f = functools.partial(lr_factor, schedule="const_cooldown", warmup_steps=0, total_steps=50)
    assert f(40, cooldown_steps=20, cooldown_power=2.0) == pytest.approx(0.25)  # (1 - 1/2)^2
    assert f(45, cooldown_steps=20, cooldown_power=2.0) == pytest.approx(0.0625)  # (1/4)^2
    assert f(45, cooldown_steps=20, cooldown_power=0.5) == pytest.approx(0.5)  # (1/4)^0.5
    assert [lr_factor(s, "const", 4, 50) for s in (0, 1, 3, 4, 49, 80)] == [
        0.25, 0.5, 1.0, 1.0, 1.0, 1.0
    ]  # fmt: skip
    assert lr_factor(30, "const", 4, 50, floor=0.3) == 1.0  # const has no decay
    with pytest.raises(ValueError, match="optim.schedule"):
        lr_factor(3, "linear", 4, 50)


def _open_clip_lrs(adjuster: Any, steps: int) -> list[float]:
    return [adjuster(s) for s in range(steps)]


@pytest.mark.parametrize("power, end", [(1.0, 0.0), (1.0, 0.2), (3.0, 0.05)])
def test_lr_schedules_equal_open_clip_train(power: float, end: float) -> None:
    """open_clip_train's schedulers as the oracle (they set the LR on an optimizer)."""
    scheduler = pytest.importorskip("open_clip_train.scheduler")
    import torch

    base, warm, total, cool = 0.5, 7, 60, 25
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base)
    theirs = {
        "const_cooldown": scheduler.const_lr_cooldown(
            opt, base, warm, total, cool, cooldown_power=power, cooldown_end_lr=end * base
        ),
        "const": scheduler.const_lr(opt, base, warm, total),
        "cosine": scheduler.cosine_lr(opt, base, warm, total),
    }
    for name, adjuster in theirs.items():
        floor = 0.0 if name == "cosine" else end  # open_clip's cosine decays to 0
        want = [lr / base for lr in _open_clip_lrs(adjuster, total)]
        got = [
            lr_factor(s, name, warm, total, floor, cooldown_steps=cool, cooldown_power=power)
            for s in range(total)
        ]
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, err_msg=name)
