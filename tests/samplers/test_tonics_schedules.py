"""Shapes of the TOnICS curriculum schedules and the ontology walk."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vlexp.schedules import (
    SCHEDULES,
    OntologyWalk,
    build_schedule,
    constant_schedule,
    cosine_schedule,
    linear_schedule,
    max_probability,
    step_schedule,
)

GRID = np.linspace(0.0, 1.0, 201)


def test_registered_names() -> None:
    assert SCHEDULES.names() == ["constant", "cosine", "linear", "step"]


def test_linear_values_and_shape() -> None:
    s = linear_schedule(p_max=0.6, start=0.2, end=0.7)
    # hand-computed: 0 before start, 0.6 * (t - 0.2) / 0.5 inside, 0.6 after end
    assert s(0.0) == 0.0
    assert s(0.2) == 0.0
    assert s(0.45) == pytest.approx(0.3)
    assert s(0.7) == pytest.approx(0.6)
    assert s(1.0) == pytest.approx(0.6)
    v = s(GRID)
    assert v.shape == GRID.shape
    assert np.all(np.diff(v) >= -1e-15)  # monotonic
    assert linear_schedule(p_min=0.1, p_max=0.9)(0.0) == pytest.approx(0.1)


def test_linear_defaults_documented() -> None:
    s = linear_schedule()
    assert (s.high, s.start, s.end, s.low) == (1.0, 0.0, 0.8, 0.0)
    assert s(0.2) == pytest.approx(0.25)  # 0.2 / 0.8 of the ramp


@pytest.mark.parametrize("factory", [linear_schedule, cosine_schedule, step_schedule])
def test_default_schedules_end_in_same_object_batches_only(factory) -> None:
    """The curriculum's end state: every batch of the last part of training is same-object."""
    s = factory()
    assert s(0.0) == 0.0
    assert np.all(s(np.linspace(0.8, 1.0, 41)) == 1.0)


def test_shipped_sampler_config_ends_in_same_object_batches() -> None:
    from omegaconf import OmegaConf

    from tests.conftest import compose_cfg

    spec = OmegaConf.to_container(compose_cfg(["sampler=tonics"]).sampler.schedule)
    assert spec["name"] == "linear"
    s = build_schedule(spec)
    assert s(0.0) == 0.0
    assert s(1.0) == 1.0
    # share of same-object batches over the whole training, by numerical integration
    # (the linear ramp to 1 at 0.8, then 1: 0.4 + 0.2 = 0.6)
    assert np.mean(s(np.linspace(0.0, 1.0, 100_001))) == pytest.approx(0.6, abs=1e-4)


@pytest.mark.parametrize("name", ["constant", "cosine", "linear", "step"])
def test_every_schedule_has_a_preset_with_its_defaults(name: str) -> None:
    """`sampler/schedule=<name>` composes that schedule with its factory's defaults."""
    from omegaconf import OmegaConf

    from tests.conftest import compose_cfg
    from vlexp.config import validate_config

    assert name in SCHEDULES.names()
    cfg = compose_cfg(["sampler=tonics", f"sampler/schedule={name}"])
    validate_config(cfg)
    spec = OmegaConf.to_container(cfg.sampler.schedule)
    preset, default = build_schedule(spec), build_schedule(name)
    np.testing.assert_array_equal(preset(GRID), default(GRID))


def test_switching_schedule_by_name_points_to_the_preset() -> None:
    """`sampler.schedule.name=constant` keeps linear's options: the error names the fix."""
    from tests.conftest import compose_cfg
    from vlexp.config import ConfigError, validate_config

    with pytest.raises(ConfigError) as err:
        validate_config(compose_cfg(["sampler=tonics", "sampler.schedule.name=constant"]))
    assert "sampler.schedule.p_max: unknown option" in str(err.value)
    assert "`sampler/schedule=constant`" in str(err.value)


def test_cosine_values_and_shape() -> None:
    s = cosine_schedule(p_max=1.0, start=0.0, end=1.0)
    assert s(0.0) == pytest.approx(0.0)
    assert s(0.5) == pytest.approx(0.5)
    assert s(0.25) == pytest.approx((1 - math.cos(math.pi * 0.25)) / 2)
    assert s(1.0) == pytest.approx(1.0)
    v = s(GRID)
    assert np.all(np.diff(v) >= -1e-12)
    # flat at both ends: the first step is much smaller than the linear one
    assert v[1] - v[0] < 0.05 * (GRID[1] - GRID[0])


def test_step_switches_at_fraction() -> None:
    s = step_schedule(p_max=1.0, at=0.3)
    assert s(0.0) == 0.0
    assert s(0.2999) == 0.0
    assert s(0.3) == 1.0
    assert s(1.0) == 1.0
    v = s(GRID)
    assert np.all(np.diff(v) >= 0)
    assert set(np.unique(v)) == {0.0, 1.0}


def test_constant() -> None:
    s = constant_schedule(0.25)
    np.testing.assert_array_equal(s(GRID), np.full_like(GRID, 0.25))
    assert s(0.7) == 0.25


@pytest.mark.parametrize(
    "bad",
    [
        {"name": "linear", "p_max": 1.5},
        {"name": "linear", "start": 0.6, "end": 0.4},
        {"name": "cosine", "p_min": -0.1},
        {"name": "step", "at": 2.0},
        {"name": "constant", "p": -1},
    ],
)
def test_invalid_parameters_raise(bad: dict) -> None:
    with pytest.raises(ValueError):
        build_schedule(bad)


def test_build_schedule_forms() -> None:
    assert build_schedule("cosine") == cosine_schedule()
    s = build_schedule({"name": "step", "at": 0.1, "p_max": 0.8})
    assert s == step_schedule(p_max=0.8, at=0.1)
    inst = constant_schedule(0.1)
    assert build_schedule(inst) is inst
    with pytest.raises(TypeError, match="unknown option"):
        build_schedule({"name": "linear", "pmax": 0.3})
    with pytest.raises(KeyError, match="Unknown schedule"):
        build_schedule("exponential")
    assert max_probability(linear_schedule(p_max=0.7)) == pytest.approx(0.7)


def test_ontology_walk_levels() -> None:
    walk = OntologyWalk(start=0.0, end=1.0)
    # two levels: roots for the first half, leaves from the middle on
    np.testing.assert_array_equal(walk.level([0.0, 0.49, 0.5, 0.99, 1.0], 2), [0, 0, 1, 1, 1])
    lv = walk.level(GRID, 3)
    assert lv[0] == 0 and lv[-1] == 2
    assert np.all(np.diff(lv) >= 0)
    assert set(lv.tolist()) == {0, 1, 2}
    late = OntologyWalk(start=0.5, end=0.9)
    np.testing.assert_array_equal(late.level([0.1, 0.69, 0.7, 0.95], 2), [0, 0, 1, 1])
    np.testing.assert_array_equal(walk.level(GRID, 1), np.zeros(len(GRID)))
