"""The experiments' harness: paired intervals against scipy, verdicts, the job runner."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from experiments.harness import (  # noqa: E402
    Job,
    job_dir,
    paired,
    paired_table_md,
    plot_paired,
    print_plan,
    run_jobs,
    runner,  # noqa: E402
    seeds_needed,
    t_quantile,
    verdict,
)


def test_t_quantile_matches_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    for df in [1, 2, 3, 4, 5, 9, 29, 30, 31, 45, 100, 1000]:
        assert t_quantile(df) == pytest.approx(stats.t.ppf(0.975, df), abs=2e-4)
    with pytest.raises(ValueError):
        t_quantile(0)


def test_paired_interval_matches_scipy_ttest_rel() -> None:
    stats = pytest.importorskip("scipy.stats")
    method = {0: 31.0, 1: 28.5, 2: 35.25, 3: 30.0, 7: 99.0}
    baseline = {0: 29.0, 1: 28.0, 2: 31.0, 3: 30.5, 5: 1.0}
    p = paired(method, baseline)
    assert p.seeds == (0, 1, 2, 3)  # only the common seeds
    a, b = [method[s] for s in p.seeds], [baseline[s] for s in p.seeds]
    ci = stats.ttest_rel(a, b).confidence_interval(0.95)
    assert p.mean == pytest.approx(sum(x - y for x, y in zip(a, b, strict=True)) / 4)
    assert (p.lo, p.hi) == pytest.approx((ci.low, ci.high), abs=1e-3)


def test_paired_by_hand_and_degenerate_cases() -> None:
    p = paired({0: 1.0, 1: 2.0, 2: 3.0}, {0: 0.0, 1: 0.0, 2: 0.0})
    assert (p.mean, p.sd) == pytest.approx((2.0, 1.0))
    assert p.hi - p.mean == pytest.approx(4.3027 / math.sqrt(3), abs=1e-4)
    one = paired({4: 2.0}, {4: 1.0})
    assert one.n == 1 and math.isnan(one.lo)
    with pytest.raises(ValueError, match="no common seed"):
        paired({0: 1.0}, {1: 1.0})


def test_verdict_and_seed_rule() -> None:
    up = paired({0: 3.0, 1: 4.0, 2: 5.0}, {0: 1.0, 1: 1.0, 2: 1.0})
    flat = paired({0: 1.5, 1: 0.0, 2: 1.0}, {0: 1.0, 1: 1.0, 2: 1.0})
    down = paired({0: 0.0, 1: 0.0, 2: 0.0}, {0: 3.0, 1: 4.0, 2: 5.0})
    assert "**reproduced at this scale**" in verdict("A beats B", up)
    assert "includes 0" in verdict("A beats B", flat)
    assert "significantly worse" in verdict("A beats B", down)
    assert "n=3 seeds" in verdict("A beats B", up)
    assert "fewer than 2" in verdict("x", paired({0: 1.0}, {0: 0.0}))
    assert seeds_needed(up) == 3 and seeds_needed(flat) == 5
    # diffs 2, 3, 4: mean 3, sd 1, t(0.975, 2) = 4.303 -> [0.52, 5.48] (hand-computed)
    assert (up.side, flat.side, down.side) == ("above 0", "includes 0", "below 0")
    assert paired({0: 1.0}, {0: 0.0}).side == "includes 0"  # no interval under 2 seeds


def test_table_and_plot(tmp_path: Path) -> None:
    rows = [("m - b", paired({0: 2.0, 1: 3.0, 2: 4.0}, {0: 1.0, 1: 1.0, 2: 1.0}))]
    table = paired_table_md(rows)
    assert "| m - b | 0: +1.00, 1: +2.00, 2: +3.00 | +2.00 | 1.00 |" in table
    png = plot_paired(rows, tmp_path / "p.png", "title")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _fake_command(job: Job, run_dir: Path, logger: str = "csv") -> list[str]:
    """A stand-in for ``python -m vlexp.run``: fails for key 'bad', else writes metrics."""
    code = (
        "import json, sys, pathlib\n"
        f"d = pathlib.Path({str(run_dir)!r})\n"
        f"if {job.key!r} == 'bad': sys.exit(3)\n"
        "s = sum(i * i for i in range(200000))\n"
        f"(d / 'metrics.json').write_text(json.dumps({{'test': {{'m': {job.seed}}}}}))\n"
    )
    return [sys.executable, "-c", code]


def test_run_jobs_runs_reuses_and_reports_failures(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(runner, "command", _fake_command)
    jobs = [Job("a", [], 0), Job("a", [], 1), Job("b", ["x=1"], 0)]
    total = print_plan("demo", jobs, {"a": 60.0, "b": 120.0}, extra_cpu_seconds=60.0)
    assert total == 300.0 and "3 runs, about 5 CPU-minutes" in capsys.readouterr().out
    out = run_jobs(jobs, tmp_path, parallel=2)
    assert out[("a", 1)]["test"]["m"] == 1 and out[("b", 0)]["cpu_seconds"] > 0
    cpu = json.loads((job_dir(tmp_path, jobs[0]) / "cpu.json").read_text())
    assert cpu["cpu_seconds"] > 0 and cpu["wall_seconds"] > 0
    # a second call reuses finished jobs: nothing is re-run
    (job_dir(tmp_path, jobs[0]) / "metrics.json").write_text(json.dumps({"test": {"m": 42}}))
    assert run_jobs(jobs, tmp_path)[("a", 0)]["test"]["m"] == 42
    with pytest.raises(RuntimeError, match=r"1 of 2 jobs failed[\s\S]*bad seed 0"):
        run_jobs([Job("bad", [], 0), Job("c", [], 0)], tmp_path)
    assert (tmp_path / "c" / "seed0" / "metrics.json").is_file()  # the others still ran
    # a finished run made with other overrides is refused, not reused as this job's result
    with pytest.raises(RuntimeError, match=r"b seed 0: .* other overrides"):
        run_jobs([Job("b", ["x=2"], 0)], tmp_path)
    with pytest.raises(ValueError, match="share a"):
        run_jobs([Job("a", [], 0), Job("a", [], 0)], tmp_path)


def test_command_line_of_a_job(tmp_path: Path) -> None:
    cmd = runner.command(Job("clip", ["objective=clip"], 2), tmp_path / "sw" / "clip" / "seed2")
    assert cmd[1:4] == ["-m", "vlexp.run", "objective=clip"]
    assert "seed=2" in cmd and "resume=auto" in cmd and "logger=csv" in cmd
    wb = runner.command(Job("k", [], 0), tmp_path / "sw" / "k" / "seed0", logger="wandb")
    assert "logger.group=sw" in wb
