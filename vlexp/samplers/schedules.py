"""Curriculum schedules of the TOnICS sampler.

A *schedule* maps training progress ``t`` in ``[0, 1]`` (global step / total steps) to
the probability that a minibatch is a *same-object* batch rather than a *diverse* one.
All schedules are vectorised: they accept a float or a numpy array of progress values
and return ``np.ndarray`` of probabilities of the same shape.

The TOnICS paper (Srinivasan et al., arXiv 2207.14525) says the sampler moves
"progressively" from diverse minibatches to minibatches in which *all* pairs share one
object; its exact schedule is not public. The defaults below follow that description
(the probability rises from 0 to 1 and training ends in same-object batches only), but
every number (``p_max = 1``, a linear ramp reaching it at 80% of training, then held) is
a vlexp default, not the paper's.

:class:`OntologyWalk` is the second reading of "progressive": same-object groups walk
down the ontology from coarse parent classes (e.g. "animal") to fine leaf classes
(e.g. "dog") over training.

Configs pick a schedule by name (``linear``, ``cosine``, ``step``, ``constant``) with
:data:`SCHEDULES`, e.g. ``{"name": "linear", "p_max": 1.0, "start": 0.0, "end": 0.8}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import ArrayLike

from vlexp.registry import Registry


@runtime_checkable
class Schedule(Protocol):
    """Progress in ``[0, 1]`` -> probability of a same-object batch (vectorised)."""

    def __call__(self, progress: ArrayLike) -> np.ndarray: ...


SCHEDULES: Registry[Schedule] = Registry("schedule", config_group="sampler.schedule")


def _check_prob(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"schedule {name} must be a probability in [0, 1], got {value}")


def _check_window(start: float, end: float) -> None:
    if not 0.0 <= start < end <= 1.0:
        raise ValueError(
            f"schedule needs 0 <= start < end <= 1 (fractions of training), got "
            f"start={start}, end={end}"
        )


def _ramp(progress: ArrayLike, start: float, end: float) -> np.ndarray:
    """0 before ``start``, 1 after ``end``, linear in between."""
    t = np.asarray(progress, dtype=np.float64)
    return np.clip((t - start) / (end - start), 0.0, 1.0)


@SCHEDULES.register("linear")
@dataclass(frozen=True)
class LinearSchedule:
    """``p_min`` until ``start``, a straight line to ``p_max`` at ``end``, then ``p_max``.

    Defaults are vlexp's (the paper's schedule is not public): same-object batches rise
    from none at the start of training to all batches at 80% of training, and the last
    fifth of training holds only same-object batches (the curriculum's end state).
    """

    p_max: float = 1.0
    start: float = 0.0
    end: float = 0.8
    p_min: float = 0.0

    def __post_init__(self) -> None:
        _check_prob("p_max", self.p_max)
        _check_prob("p_min", self.p_min)
        _check_window(self.start, self.end)

    def __call__(self, progress: ArrayLike) -> np.ndarray:
        return self.p_min + (self.p_max - self.p_min) * _ramp(progress, self.start, self.end)


@SCHEDULES.register("cosine")
@dataclass(frozen=True)
class CosineSchedule:
    """Like :class:`LinearSchedule` but with a half-cosine ramp (flat at both ends).

    ``p(t) = p_min + (p_max - p_min) * (1 - cos(pi * x)) / 2`` with ``x`` the linear ramp
    from ``start`` to ``end``. Defaults (those of :class:`LinearSchedule`) are vlexp's,
    not the paper's.
    """

    p_max: float = 1.0
    start: float = 0.0
    end: float = 0.8
    p_min: float = 0.0

    def __post_init__(self) -> None:
        _check_prob("p_max", self.p_max)
        _check_prob("p_min", self.p_min)
        _check_window(self.start, self.end)

    def __call__(self, progress: ArrayLike) -> np.ndarray:
        x = _ramp(progress, self.start, self.end)
        return self.p_min + (self.p_max - self.p_min) * 0.5 * (1.0 - np.cos(np.pi * x))


@SCHEDULES.register("step")
@dataclass(frozen=True)
class StepSchedule:
    """``p_min`` before progress ``at``, ``p_max`` from ``at`` on (a two-phase switch).

    With the default ``p_max = 1`` this is the strict reading "diverse batches first,
    then only same-object batches". Defaults are vlexp's, not the paper's.
    """

    p_max: float = 1.0
    at: float = 0.5
    p_min: float = 0.0

    def __post_init__(self) -> None:
        _check_prob("p_max", self.p_max)
        _check_prob("p_min", self.p_min)
        if not 0.0 <= self.at <= 1.0:
            raise ValueError(f"step schedule `at` must be a fraction in [0, 1], got {self.at}")

    def __call__(self, progress: ArrayLike) -> np.ndarray:
        t = np.asarray(progress, dtype=np.float64)
        return np.where(t >= self.at, self.p_max, self.p_min).astype(np.float64)


@SCHEDULES.register("constant")
@dataclass(frozen=True)
class ConstantSchedule:
    """The same probability ``p`` throughout (``p = 0``: diverse batches only)."""

    p: float = 0.5

    def __post_init__(self) -> None:
        _check_prob("p", self.p)

    def __call__(self, progress: ArrayLike) -> np.ndarray:
        return np.full(np.shape(progress), self.p, dtype=np.float64)


def build_schedule(spec: str | Mapping[str, Any] | Schedule) -> Schedule:
    """A schedule from a name (defaults), a config mapping with ``name``, or an instance."""
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
    is cut into ``num_levels`` equal parts, the ``k``-th using level ``k``; before
    ``start`` the coarsest level is used and from ``end`` on the finest. A same-object
    batch at level ``k`` holds pairs sharing one depth-``k`` class (a pair counts for
    class ``c`` if it is tagged with ``c`` or any descendant of ``c``).

    The walk decides *which* groups same-object batches use; how often such batches
    occur still comes from the probability schedule. Defaults are vlexp's, not the paper's.
    """

    start: float = 0.0
    end: float = 1.0

    def __post_init__(self) -> None:
        _check_window(self.start, self.end)

    def level(self, progress: ArrayLike, num_levels: int) -> np.ndarray:
        """Ontology depth (int64, ``0 .. num_levels - 1``) to group by at ``progress``."""
        if num_levels < 1:
            raise ValueError(f"num_levels must be >= 1, got {num_levels}")
        x = _ramp(progress, self.start, self.end)
        # (the tiny offset keeps a boundary such as 0.7 from rounding down to the level before)
        return np.minimum(np.floor(x * num_levels + 1e-9), num_levels - 1).astype(np.int64)
