"""The SoftAlign experiment's helpers (experiments/softalign_noise/analysis.py, run.py).

References are computed independently: scipy's Student-t interval, a linear ramp written
out by hand, and the experiment's job grid counted from its design.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pytest

from experiments.softalign_noise import analysis
from experiments.softalign_noise import run as sa_run


def test_relative_extra_matches_scipy_t_interval() -> None:
    stats = pytest.importorskip("scipy.stats")
    method = {0: 1.30, 1: 1.20, 2: 1.45, 3: 1.25}
    base = {0: 1.00, 1: 0.95, 2: 1.10, 3: 1.00, 9: 2.0}  # 9 has no partner: ignored
    p = analysis.relative_extra(method, base)
    extra = [100 * (method[k] / base[k] - 1) for k in (0, 1, 2, 3)]
    lo, hi = stats.t.interval(0.95, len(extra) - 1, loc=sum(extra) / 4, scale=stats.sem(extra))
    assert p.n == 4
    assert p.mean == pytest.approx(sum(extra) / 4, rel=1e-12)
    assert (p.lo, p.hi) == (pytest.approx(lo, rel=1e-4), pytest.approx(hi, rel=1e-4))


def test_relative_extra_rejects_zero_baseline() -> None:
    with pytest.raises(ValueError, match="must be > 0"):
        analysis.relative_extra({0: 1.0, 1: 1.0}, {0: 0.0, 1: 1.0})


def test_points_is_percent_mean_of_both_directions() -> None:
    result = {"test": {"test/synthetic/i2t_R@1": 0.125, "test/synthetic/t2i_R@1": 0.25}}
    assert analysis.points(result) == pytest.approx(18.75)
    with pytest.raises(KeyError, match="missing"):
        analysis.points({"test": {"test/synthetic/i2t_R@1": 0.1}})


def _write_log(path: Path, alpha_max: float, steps: int, ramp_end: float) -> None:
    """A Lightning-style CSV log: a linear ramp to alpha_max at ramp_end, every 10 steps."""
    lines = ["epoch,step,train/loss,train/softalign_alpha,train/target_entropy,val/mean_R@1"]
    for step in range(9, steps, 10):
        a = alpha_max * min(1.0, (step + 1) / (ramp_end * steps))
        lines.append(f"0,{step},3.0,{a},{0.7 * a},")
        if step == steps // 2 - 1:
            lines.append(f"0,{step},,,,0.1")  # a validation row: no train/ values
    path.write_text("\n".join(lines) + "\n")


def test_mechanism_summary_counts_steps_at_maximum(tmp_path: Path) -> None:
    log = tmp_path / "metrics.csv"
    _write_log(log, alpha_max=0.5, steps=400, ramp_end=0.5)
    s = analysis.mechanism_summary(analysis.read_train_log(log), alpha_max=0.5)
    # logged steps 9, 19, ..., 399 (40); a_t = 0.5 from step 199 on: 21 of them
    assert s["share_at_max"] == pytest.approx(21 / 40)
    assert s["final_alpha"] == pytest.approx(0.5)
    assert s["entropy_at_max"] == pytest.approx(0.35)
    off = tmp_path / "off.csv"
    _write_log(off, alpha_max=0.0, steps=400, ramp_end=0.5)
    s0 = analysis.mechanism_summary(analysis.read_train_log(off), alpha_max=0.0)
    assert s0["share_at_max"] == 0.0 and s0["max_entropy"] == 0.0
    assert math.isnan(s0["entropy_at_max"])


def test_mechanism_summary_needs_a_softalign_log(tmp_path: Path) -> None:
    log = tmp_path / "clip.csv"
    log.write_text("epoch,step,train/loss\n0,9,3.0\n")
    with pytest.raises(ValueError, match="softalign run"):
        analysis.mechanism_summary(analysis.read_train_log(log), alpha_max=0.5)


def _args(**kw: object) -> argparse.Namespace:
    return sa_run.parse_args([f"--{k.replace('_', '-')}={v}" for k, v in kw.items()])


def test_job_grid_follows_the_design() -> None:
    args = _args(steps=120, ramp_end=0.5)
    rows = [r.name for r in sa_run.ROWS]
    noisy = sa_run.make_jobs(args, rows, sa_run.NOISY, range(3))
    clean = sa_run.make_jobs(args, rows, sa_run.CLEAN, range(3))
    assert len(noisy) == 4 * 3 and len(clean) == 3 * 3  # the self teacher: noisy only
    by_key = {j.key: j.overrides for j in noisy}
    clip, off = by_key["noise40_clip"], by_key["noise40_softalign_off"]
    assert "objective=clip" in clip and not any("ramp_end" in o for o in clip)
    assert {"objective.alpha_max=0", "objective.ramp_end=0.5", "objective.ema_decay=0.98"} <= set(
        off
    )
    assert not any("ema_decay" in o for o in by_key["noise40_softalign_self"])
    assert "data.source.noisy_caption_frac=0.4" in clip and "trainer.max_steps=120" in clip
    assert {j.seed for j in clean} == {0, 1, 2}


def test_extra_seeds_only_for_small_inexact_differences() -> None:
    def res(r1: float) -> dict:
        return {"test": {"test/synthetic/i2t_R@1": r1, "test/synthetic/t2i_R@1": r1}}

    n = sa_run.NOISY
    clip = {0: 0.20, 1: 0.22, 2: 0.18}
    results = {(sa_run.key("clip", n), s): res(v) for s, v in clip.items()}
    for s, v in clip.items():
        results[(sa_run.key("softalign", n), s)] = res(v + 0.005)  # +0.5 points: small
        results[(sa_run.key("softalign_off", n), s)] = res(v)  # exactly CLIP: settled
        results[(sa_run.key("softalign_self", n), s)] = res(v + 0.03)  # +3 points: enough
    assert sa_run.extra_seeds(results, [n], seeds=3, max_seeds=5) == [("softalign", n)]
    assert sa_run.extra_seeds(results, [n], seeds=3, max_seeds=3) == []


def test_runs_span_from_first_start_to_last_end(tmp_path: Path) -> None:
    import json
    import os

    results = {}
    for k, s, wall, end in (("noise40_clip", 0, 100.0, 1000.0), ("noise00_clip", 1, 50.0, 1300.0)):
        d = tmp_path / k / f"seed{s}"
        d.mkdir(parents=True)
        (d / "cpu.json").write_text(json.dumps({"cpu_seconds": 1.0, "wall_seconds": wall}))
        (d / "metrics.json").write_text("{}")
        os.utime(d / "metrics.json", (end, end))
        results[(k, s)] = {}
    # first start 1000 - 100 = 900, last end 1300
    assert sa_run.runs_span_s(tmp_path, results) == pytest.approx(400.0)
