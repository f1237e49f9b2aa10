"""Pure helpers of the SoftAlign experiment: metrics of a run, mechanism checks, cost ratios.

Kept apart from ``run.py`` (which trains) so they can be tested on hand-made inputs.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from experiments.harness import Paired, paired

R1_KEYS = ("test/synthetic/i2t_R@1", "test/synthetic/t2i_R@1")
"""Primary metric: mean of image->text and text->image R@1 on the clean synthetic test split."""

SECONDARY = {
    "R@5": ("test/synthetic/i2t_R@5", "test/synthetic/t2i_R@5"),
    "compositional R@1": ("test/compositional/i2t_R@1", "test/compositional/t2i_R@1"),
    "fine-grained acc": ("test/finegrained/finegrained_acc",),
}


def points(result: Mapping[str, Any], keys: Sequence[str] = R1_KEYS) -> float:
    """Mean of the test metrics ``keys`` of one run's ``metrics.json`` content, in points (x100).

    The runs write retrieval metrics as fractions in [0, 1].
    """
    tests = result.get("test") or {}
    missing = [k for k in keys if k not in tests]
    if missing:
        raise KeyError(f"test metrics {missing} missing from the run; have {sorted(tests)[:8]}")
    return 100.0 * sum(float(tests[k]) for k in keys) / len(keys)


def relative_extra(method: Mapping[Any, float], baseline: Mapping[Any, float]) -> Paired:
    """Extra cost of ``method`` over ``baseline`` in percent, paired on common keys.

    Each unit (a seed, or a benchmark round) contributes ``100 (method / baseline - 1)``;
    the result is the mean of these with its 95 % Student-t interval.
    """
    common = sorted(set(method) & set(baseline))
    for k in common:
        if not baseline[k] > 0:
            raise ValueError(f"baseline cost of unit {k!r} must be > 0, got {baseline[k]}")
    extra = {i: 100.0 * (float(method[k]) / float(baseline[k]) - 1.0) for i, k in enumerate(common)}
    return paired(extra, dict.fromkeys(extra, 0.0))


def read_train_log(csv_path: str | Path) -> list[dict[str, float]]:
    """Training rows (``step`` plus the ``train/*`` values) of a run's ``csv/metrics.csv``."""
    rows: list[dict[str, float]] = []
    with open(csv_path, newline="") as f:
        for rec in csv.DictReader(f):
            vals = {k: float(v) for k, v in rec.items() if k.startswith("train/") and v != ""}
            if vals and rec.get("step", "") != "":
                rows.append({"step": float(rec["step"]), **vals})
    return rows


def mechanism_summary(
    rows: Sequence[Mapping[str, float]], alpha_max: float, tol: float = 1e-6
) -> dict[str, float]:
    """How long the distillation weight sat at its maximum, and how soft the targets were.

    ``rows`` are :func:`read_train_log` rows. Returns ``share_at_max`` (share of the
    logged steps whose ``train/softalign_alpha`` is within ``tol`` of ``alpha_max``; 0 when
    ``alpha_max`` is 0), ``final_alpha``, ``entropy_at_max`` (mean
    ``train/target_entropy`` in nats over those steps; NaN when there are none) and
    ``max_entropy`` (its largest logged value: 0 when every target stayed one-hot).
    """
    logged = [r for r in rows if "train/softalign_alpha" in r]
    if not logged:
        raise ValueError("no train/softalign_alpha in the log: is this a softalign run?")
    at_max = [
        r for r in logged if alpha_max > 0 and abs(r["train/softalign_alpha"] - alpha_max) <= tol
    ]
    ent = [r["train/target_entropy"] for r in at_max if "train/target_entropy" in r]
    all_ent = [r["train/target_entropy"] for r in logged if "train/target_entropy" in r]
    return {
        "share_at_max": len(at_max) / len(logged),
        "final_alpha": logged[-1]["train/softalign_alpha"],
        "entropy_at_max": sum(ent) / len(ent) if ent else math.nan,
        "max_entropy": max(all_ent) if all_ent else math.nan,
    }
