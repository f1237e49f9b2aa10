"""One progress-schedule type (:class:`Ramp`): a value moving from ``low`` to ``high``.

``r(t)`` is ``low`` until ``start``, ``high`` from ``end``, and in between follows ``x`` (linear)
or ``(1 - cos(pi x)) / 2`` (cosine) of ``x = (t - start) / (end - start)``; ``step`` and
``constant`` are the degenerate cases. A ramp is a pure function of training progress,
so a resumed run is at the same point. Every schedule of vlexp is one: the learning rate
(:func:`lr_factor`: warm-up then cosine, const or const_cooldown), SoftAlign's weight
(:func:`weight_ramp`) and TOnICS' same-object probability and ontology walk (by name from
:data:`SCHEDULES`). More: docs/DESIGN.md ("Schedules").
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import ArrayLike

from vlexp.registry import Opt, Registry

KINDS = ("linear", "cosine", "step", "constant")
RAMP_KINDS = ("linear", "cosine", "constant")
"""Kinds a loss-weight ramp (:func:`weight_ramp`) accepts."""


@dataclass(frozen=True)
class Ramp:
    """A value from ``low`` to ``high`` between progress ``start`` and ``end`` (see module)."""

    kind: str = "linear"
    high: float = 1.0
    start: float = 0.0
    end: float = 1.0
    low: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"schedule kind must be one of {KINDS}, got {self.kind!r}")
        for name in ("high", "low"):
            if not math.isfinite(float(getattr(self, name))):
                raise ValueError(
                    f"schedule {name} must be a finite number, got {getattr(self, name)}"
                )
        if self.kind == "step":
            if not 0.0 <= self.start <= 1.0:
                raise ValueError(
                    f"step schedule `at` must be a fraction in [0, 1], got {self.start}"
                )
        elif not 0.0 <= self.start < self.end <= 1.0:
            raise ValueError(
                "schedule needs 0 <= start < end <= 1 (fractions of training at which the value "
                f"starts and stops moving), got start={self.start}, end={self.end}"
            )

    def fraction(self, progress: ArrayLike) -> Any:
        """How far along the ramp ``progress`` is, in ``[0, 1]`` (before the curve ``f``)."""
        t = np.asarray(progress, dtype=np.float64)
        if np.isnan(t).any():
            raise ValueError("schedule progress is NaN; schedules expect progress in [0, 1]")
        if self.kind == "step":
            x = (t >= self.start).astype(np.float64)
        else:
            x = np.clip((t - self.start) / (self.end - self.start), 0.0, 1.0)
        return _like(progress, x)

    def __call__(self, progress: ArrayLike) -> Any:
        """The value at ``progress`` (clamped to ``[0, 1]``); float in, float out."""
        x = np.asarray(self.fraction(progress), dtype=np.float64)
        if self.kind == "constant":
            return _like(progress, np.full(x.shape, float(self.high)))
        curve = 0.5 * (1.0 - np.cos(np.pi * x)) if self.kind == "cosine" else x
        value = self.low + (self.high - self.low) * curve
        return _like(progress, np.where(x >= 1.0, float(self.high), value))  # exact from `end` on


def _like(progress: ArrayLike, values: np.ndarray) -> Any:
    """A Python float for scalar ``progress``, the array otherwise."""
    return (
        float(values) if np.ndim(progress) == 0 and not isinstance(progress, np.ndarray) else values
    )


# --------------------------------------------------------------------- learning rate
def warmup_cosine(step: int, warmup_steps: int, total_steps: int, floor: float = 0.0) -> float:
    """LR factor at optimizer ``step``: linear warm-up to 1 over ``warmup_steps``, then a
    cosine decay to ``floor`` at ``total_steps``."""
    if step < warmup_steps:
        return _warmup(step, warmup_steps)
    t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return Ramp("cosine", high=floor, low=1.0)(min(1.0, t))


def _warmup(step: int, warmup_steps: int) -> float:
    return Ramp("linear")((step + 1) / warmup_steps)


def warmup_const(step: int, warmup_steps: int) -> float:
    """LR factor at ``step``: linear warm-up to 1 over ``warmup_steps``, then 1."""
    return _warmup(step, warmup_steps) if step < warmup_steps else 1.0


def warmup_const_cooldown(
    step: int,
    warmup_steps: int,
    total_steps: int,
    cooldown_steps: int,
    floor: float = 0.0,
    power: float = 1.0,
) -> float:
    """LR factor at ``step``: warm-up, 1 until the last ``cooldown_steps`` of
    ``total_steps``, then ``floor + (1 - floor) * (1 - x) ** power`` with ``x`` the share
    of the cool-down done (``power = 1``: a straight line to ``floor`` at ``total_steps``)."""
    if step < warmup_steps:
        return _warmup(step, warmup_steps)
    start = total_steps - cooldown_steps
    if step < start:
        return 1.0
    x = min(1.0, (step - start) / max(1, cooldown_steps))
    return floor + (1.0 - floor) * (1.0 - x) ** power


LR_SCHEDULES = ("cosine", "const", "const_cooldown")
"""Values of ``optim.schedule``."""


def lr_factor(
    step: int,
    schedule: str,
    warmup_steps: int,
    total_steps: int,
    floor: float = 0.0,
    cooldown_steps: int = 0,
    cooldown_power: float = 1.0,
) -> float:
    """The LR multiplier at optimizer ``step`` under ``schedule`` (one of :data:`LR_SCHEDULES`;
    ``floor``: the final factor of ``cosine`` and ``const_cooldown``)."""
    if schedule == "cosine":
        return warmup_cosine(step, warmup_steps, total_steps, floor)
    if schedule == "const":
        return warmup_const(step, warmup_steps)
    if schedule == "const_cooldown":
        return warmup_const_cooldown(
            step, warmup_steps, total_steps, cooldown_steps, floor, cooldown_power
        )
    raise ValueError(f"optim.schedule must be one of {LR_SCHEDULES}, got {schedule!r}")


# --------------------------------------------------------------------- loss weights
def weight_ramp(
    kind: str = "linear",
    max_value: float = 1.0,
    end: float = 1.0,
    start: float = 0.0,
    min_value: float = 0.0,
) -> Ramp:
    """A loss weight from ``min_value`` to ``max_value`` (kind ``linear``/``cosine``/``constant``)."""
    if kind not in RAMP_KINDS:
        raise ValueError(f"ramp kind must be one of {RAMP_KINDS}, got {kind!r}")
    return Ramp(
        kind, high=float(max_value), start=float(start), end=float(end), low=float(min_value)
    )


def build_ramp(spec: str | Mapping[str, Any] | Ramp) -> Ramp:
    """A weight :class:`Ramp` from a kind name, a mapping of :func:`weight_ramp`'s
    arguments, or an instance."""
    if isinstance(spec, Ramp):
        return spec
    if isinstance(spec, str):
        return weight_ramp(kind=spec)
    if isinstance(spec, Mapping):
        unknown = sorted(set(spec) - {"kind", "max_value", "end", "start", "min_value"})
        if unknown:
            raise TypeError(
                f"ramp got unknown option(s) {unknown}; accepted: kind, max_value, end, "
                "start, min_value"
            )
        return weight_ramp(**dict(spec))
    raise TypeError(
        f"ramp must be a kind name {RAMP_KINDS}, a mapping of weight_ramp arguments or a "
        f"Ramp; got {type(spec).__name__}"
    )


# --------------------------------------------------------------------- probabilities (TOnICS)
@runtime_checkable
class Schedule(Protocol):
    """Progress in ``[0, 1]`` -> probability of a same-object batch (vectorised)."""

    def __call__(self, progress: ArrayLike) -> Any: ...


SCHEDULES: Registry[Ramp] = Registry(
    "schedule", config_group="sampler.schedule", preset_group="sampler/schedule"
)

_PROB = Opt(float, lo=0.0, hi=1.0)
_RAMP_SCHEMA = {"p_max": _PROB, "start": _PROB, "end": _PROB, "p_min": _PROB}


def _check_prob(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"schedule {name} must be a probability in [0, 1], got {value}")


def _probability_ramp(kind: str, p_max: float, start: float, end: float, p_min: float) -> Ramp:
    _check_prob("p_max", p_max)
    _check_prob("p_min", p_min)
    return Ramp(kind, high=float(p_max), start=float(start), end=float(end), low=float(p_min))


def _window_checks(options: dict, context: dict) -> list[str]:
    """An inverted window (``start`` after ``end``) would jump instead of ramping."""
    start, end = options.get("start"), options.get("end")
    if isinstance(start, int | float) and isinstance(end, int | float) and start > end:
        return [f"start={start} is after end={end}: the ramp runs from start to end; swap them"]
    return []


@SCHEDULES.register("linear", schema=_RAMP_SCHEMA, hooks={"checks": _window_checks})
def linear_schedule(
    p_max: float = 1.0, start: float = 0.0, end: float = 0.8, p_min: float = 0.0
) -> Ramp:
    """``p_min`` until ``start``, a straight line to ``p_max`` at ``end``, then ``p_max``
    (vlexp's defaults: none to all same-object batches by 80% of training)."""
    return _probability_ramp("linear", p_max, start, end, p_min)


@SCHEDULES.register("cosine", schema=_RAMP_SCHEMA, hooks={"checks": _window_checks})
def cosine_schedule(
    p_max: float = 1.0, start: float = 0.0, end: float = 0.8, p_min: float = 0.0
) -> Ramp:
    """Like :func:`linear_schedule` with a half-cosine ramp (flat at both ends)."""
    return _probability_ramp("cosine", p_max, start, end, p_min)


@SCHEDULES.register("step", schema={"p_max": _PROB, "at": _PROB, "p_min": _PROB})
def step_schedule(p_max: float = 1.0, at: float = 0.5, p_min: float = 0.0) -> Ramp:
    """``p_min`` before progress ``at``, ``p_max`` from ``at`` on (diverse, then same-object)."""
    return _probability_ramp("step", p_max, at, 1.0, p_min)


@SCHEDULES.register("constant", schema={"p": _PROB})
def constant_schedule(p: float = 0.5) -> Ramp:
    """The same probability ``p`` throughout (``p = 0``: diverse batches only)."""
    return _probability_ramp("constant", p, 0.0, 1.0, p)


def build_schedule(spec: str | Mapping[str, Any] | Schedule) -> Schedule:
    """A probability schedule from a name (defaults), a mapping with ``name``, or an instance."""
    if isinstance(spec, str | Mapping):
        return SCHEDULES.build(spec)
    if isinstance(spec, Schedule):
        return spec
    raise TypeError(
        f"schedule must be a name ({SCHEDULES.names()}), a mapping with `name`, or a "
        f"callable progress -> probability; got {type(spec).__name__}"
    )


def max_probability(schedule: Schedule, resolution: int = 1001) -> float:
    """The largest probability ``schedule`` reaches on a grid over ``[0, 1]``."""
    return float(np.max(schedule(np.linspace(0.0, 1.0, resolution))))


@dataclass(frozen=True)
class OntologyWalk:
    """Granularity of same-object groups over training: coarse parents first, leaves last.

    The ontology's levels are depths ``0`` (roots, e.g. "animal") to ``num_levels - 1``
    (the deepest classes, e.g. "dog"). Between ``start`` and ``end`` the progress window
    is cut into ``num_levels`` equal parts, the ``k``-th using level ``k`` (a linear
    :class:`Ramp` cut into steps); before ``start`` the coarsest level is used and from
    ``end`` on the finest. A pair counts for class ``c`` if it is tagged with ``c`` or any
    descendant of ``c``. The walk decides *which* groups same-object batches use; how often
    they occur comes from the probability schedule. Defaults are vlexp's.
    """

    start: float = 0.0
    end: float = 1.0

    def __post_init__(self) -> None:
        Ramp("linear", start=self.start, end=self.end)  # validates the window

    def level(self, progress: ArrayLike, num_levels: int) -> np.ndarray:
        """Ontology depth (int64, ``0 .. num_levels - 1``) to group by at ``progress``."""
        if num_levels < 1:
            raise ValueError(f"num_levels must be >= 1, got {num_levels}")
        x = np.asarray(Ramp("linear", start=self.start, end=self.end).fraction(progress))
        # (the tiny offset keeps a boundary such as 0.7 from rounding down to the level before)
        return np.minimum(np.floor(x * num_levels + 1e-9), num_levels - 1).astype(np.int64)
