"""Paired differences over seeds, their 95 % interval, and the verdict they support.

A seed fixes the synthetic data and the initial weights, so the method and its
baseline run with the same seed form a pair; the per-seed differences
``d_s = method_s - baseline_s`` remove the seed-to-seed spread both share. The
interval is ``mean(d) +/- t_{0.975, n-1} * sd(d) / sqrt(n)`` (Student t, ``n`` seeds).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

# Two-sided 95 % quantiles t_{0.975, df}, df = 1..30 (standard table values).
_T975 = (
    12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
    2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
    2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423,
)  # fmt: skip
_Z975 = 1.959964


def t_quantile(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (``df >= 1``).

    Table values up to 30, beyond that the Cornish-Fisher expansion around the normal
    quantile (error < 1e-4 there).
    """
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


@dataclass(frozen=True)
class Paired:
    """Per-seed differences ``method - baseline`` and their mean with a 95 % interval.

    ``lo``/``hi`` are NaN with fewer than 2 seeds (no interval can be given).
    """

    seeds: tuple[int, ...]
    diffs: tuple[float, ...]
    mean: float
    sd: float
    lo: float
    hi: float

    @property
    def n(self) -> int:
        """Number of paired seeds."""
        return len(self.diffs)

    @property
    def side(self) -> str:
        """Where the 95 % interval lies: ``"above 0"``, ``"below 0"`` or ``"includes 0"``
        (also without an interval, under 2 seeds)."""
        return "above 0" if self.lo > 0 else "below 0" if self.hi < 0 else "includes 0"


def paired(method: Mapping[int, float], baseline: Mapping[int, float]) -> Paired:
    """Pair ``method`` and ``baseline`` (seed -> value) on their common seeds."""
    seeds = tuple(sorted(set(method) & set(baseline)))
    if not seeds:
        raise ValueError(
            f"no common seed to pair: method has {sorted(method)}, baseline {sorted(baseline)}"
        )
    diffs = tuple(float(method[s]) - float(baseline[s]) for s in seeds)
    n = len(diffs)
    mean = sum(diffs) / n
    if n < 2:
        return Paired(seeds, diffs, mean, math.nan, math.nan, math.nan)
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    half = t_quantile(n - 1) * sd / math.sqrt(n)
    return Paired(seeds, diffs, mean, sd, mean - half, mean + half)


def seeds_needed(p: Paired, min_seeds: int = 3, small_diff: float = 1.0, max_seeds: int = 5) -> int:
    """Seeds a comparison needs: ``max_seeds`` when ``|mean| < small_diff``, else ``min_seeds``."""
    return max_seeds if abs(p.mean) < small_diff else min_seeds


def _fmt(x: float) -> str:
    return f"{x:+.1f}" if math.isfinite(x) else "n/a"


def verdict(claim: str, p: Paired, unit: str = "pts") -> str:
    """One Markdown line: the claim, the verdict its interval supports, and the interval.

    *Reproduced at this scale* when the whole 95 % interval of the paired difference is
    above 0 (the method is better); otherwise *not reproduced at this scale*, adding
    that the method is significantly worse when the whole interval is below 0. Signs
    must be oriented so that a positive difference supports the claim.
    """
    word = {
        "above 0": "reproduced at this scale",
        "below 0": "not reproduced at this scale (the method is significantly worse)",
        "includes 0": "not reproduced at this scale (the interval includes 0)",
    }[p.side]
    if p.n < 2:
        word = "not decidable (fewer than 2 seeds)"
    return (
        f"{claim}: **{word}** ({_fmt(p.mean)} {unit}, 95 % CI [{_fmt(p.lo)}, {_fmt(p.hi)}], "
        f"n={p.n} seeds)"
    )
