"""Weight ramps over training progress, for loss weights that grow (or fade) during training.

A ramp maps training progress ``t`` in ``[0, 1]`` (what objectives receive as
``progress``: global step / total steps) to a scalar weight::

    w(t) = min_value                                   for t <= start
    w(t) = min_value + (max_value - min_value) * f(x)  for start < t < end
    w(t) = max_value                                   for t >= end

with ``x = (t - start) / (end - start)`` and ``f(x) = x`` (``linear``) or
``f(x) = (1 - cos(pi x)) / 2`` (``cosine``: flat at both ends); ``constant`` is
``max_value`` throughout. A ramp is a pure function of ``progress``, so it needs no state
of its own: resuming a run (which restores the global step) restores its position.

Unlike :mod:`vlexp.samplers.schedules` (probabilities of the TOnICS curriculum, numpy,
vectorised) these are plain float -> float weights of any finite size, e.g. SoftAlign's
distillation weight ``alpha_t``. Configs give either a kind name or a mapping::

    build_ramp({"kind": "cosine", "max_value": 0.5, "end": 0.3})
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

RAMP_KINDS = ("linear", "cosine", "constant")


@dataclass(frozen=True)
class WeightRamp:
    """A weight from ``min_value`` to ``max_value`` between progress ``start`` and ``end``.

    ``kind`` is one of :data:`RAMP_KINDS`. ``start``/``end`` are fractions of training
    (``0 <= start < end <= 1``); the weight is exactly ``max_value`` from ``end`` on and
    exactly ``min_value`` up to ``start``.
    """

    kind: str = "linear"
    max_value: float = 1.0
    end: float = 1.0
    start: float = 0.0
    min_value: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in RAMP_KINDS:
            raise ValueError(f"ramp kind must be one of {RAMP_KINDS}, got {self.kind!r}")
        for name in ("max_value", "min_value"):
            value = getattr(self, name)
            if not math.isfinite(float(value)):
                raise ValueError(f"ramp {name} must be a finite number, got {value}")
        if not 0.0 <= self.start < self.end <= 1.0:
            raise ValueError(
                "ramp needs 0 <= start < end <= 1 (fractions of training at which the weight "
                f"starts and stops growing), got start={self.start}, end={self.end}"
            )

    def fraction(self, progress: float) -> float:
        """How far along the ramp ``progress`` is, in ``[0, 1]`` (before the curve ``f``)."""
        t = float(progress)
        if math.isnan(t):
            raise ValueError("ramp progress is NaN; objectives expect progress in [0, 1]")
        return min(1.0, max(0.0, (t - self.start) / (self.end - self.start)))

    def __call__(self, progress: float) -> float:
        """The weight at ``progress`` (clamped to ``[0, 1]``)."""
        if self.kind == "constant":
            return float(self.max_value)
        x = self.fraction(progress)
        if x >= 1.0:
            return float(self.max_value)  # exact at and after `end`
        if self.kind == "cosine":
            x = 0.5 * (1.0 - math.cos(math.pi * x))
        return float(self.min_value + (self.max_value - self.min_value) * x)


def build_ramp(spec: str | Mapping[str, Any] | WeightRamp) -> WeightRamp:
    """A :class:`WeightRamp` from a kind name, a mapping of its fields, or an instance."""
    if isinstance(spec, WeightRamp):
        return spec
    if isinstance(spec, str):
        return WeightRamp(kind=spec)
    if isinstance(spec, Mapping):
        unknown = sorted(set(spec) - {"kind", "max_value", "end", "start", "min_value"})
        if unknown:
            raise TypeError(
                f"ramp got unknown option(s) {unknown}; accepted: kind, max_value, end, "
                "start, min_value"
            )
        return WeightRamp(**dict(spec))
    raise TypeError(
        f"ramp must be a kind name {RAMP_KINDS}, a mapping of WeightRamp fields or a "
        f"WeightRamp; got {type(spec).__name__}"
    )
