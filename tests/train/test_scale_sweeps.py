"""Sweeps launched as commands: a grid multirun (with per-job DDP and failing jobs) and Optuna."""

from __future__ import annotations

import json

import pytest
import yaml

from experiments.collect import collect
from tests.scale_helpers import TINY, explain, files_under, run_vlexp


@pytest.mark.slow
def test_grid_multirun_with_ddp_jobs_and_a_crashing_point(tmp_path):
    """``-m objective=clip,hnnce optim.lr=0.001,5.0``: 4 jobs; lr=5.0 fails validation.

    The good jobs train with ``strategy=ddp`` on 2 CPU processes, so Lightning re-runs the
    command for rank 1: that rank must run *its* job in *its* directory, not restart the
    sweep (no extra sweep or run directories), and only rank 0 writes files.
    """
    proc = run_vlexp(
        [
            "-m",
            "objective=clip,hnnce",
            "optim.lr=0.001,5.0",
            *TINY,
            "trainer=ddp_sim",
            "trainer.strategy=ddp",
            "hydra.sweep.dir=sweeps/${now:%H-%M-%S-%f}",
            "hydra.run.dir=runs/${now:%H-%M-%S-%f}",
        ],
        cwd=tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, explain(proc)  # failing jobs do not fail the sweep
    sweeps = list((tmp_path / "sweeps").iterdir())
    assert len(sweeps) == 1, files_under(tmp_path)
    assert not (tmp_path / "runs").exists(), "a rank re-ran a job outside the sweep"
    sweep = sweeps[0]
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert jobs == ["0", "1", "2", "3"], files_under(sweep)
    for job in jobs:
        overrides = yaml.safe_load((sweep / job / ".hydra" / "overrides.yaml").read_text())
        logs = sorted(p.name for p in (sweep / job).glob("*.log"))
        assert logs == ["run.log"], f"job {job}: only rank 0 logs to a file, got {logs}"
        if "optim.lr=5.0" in overrides:
            assert (
                "optim.lr=5.0: expected peak learning rate, in (0, 1)"
                in (sweep / job / "error.txt").read_text()
            )
            assert not (sweep / job / "metrics.json").exists()
        else:
            metrics = json.loads((sweep / job / "metrics.json").read_text())
            assert metrics["global_step"] == 4 and metrics["monitor_value"] is not None
            assert f"objective={metrics['objective']}" in overrides
            assert sorted(p.name for p in (sweep / job / "checkpoints").iterdir()) == [
                "best.ckpt", "last.ckpt"]  # fmt: skip
    table = collect(sweep)
    assert sorted(table["status"]) == ["failed", "failed", "ok", "ok"]
    assert set(table.loc[table["status"] == "ok", "objective"]) == {"clip", "hnnce"}


@pytest.mark.slow
def test_optuna_sweeper_optimises_the_returned_metric(tmp_path):
    proc = run_vlexp(
        ["hparams_search=optuna_lr", "hydra.sweeper.n_trials=2", *TINY, "hydra.sweep.dir=opt"],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, explain(proc)
    result = yaml.safe_load((tmp_path / "opt" / "optimization_results.yaml").read_text())
    trials = {}
    for job in ("0", "1"):
        metrics = json.loads((tmp_path / "opt" / job / "metrics.json").read_text())
        overrides = yaml.safe_load(
            (tmp_path / "opt" / job / ".hydra" / "overrides.yaml").read_text()
        )
        lr = next(float(o.split("=", 1)[1]) for o in overrides if o.startswith("optim.lr="))
        trials[job] = (metrics["monitor_value"], lr)
    best_job = max(trials, key=lambda j: trials[j][0])
    assert result["best_value"] == pytest.approx(trials[best_job][0])
    if trials["0"][0] != trials["1"][0]:  # a tie leaves either trial best
        assert result["best_params"]["optim.lr"] == pytest.approx(trials[best_job][1])
    assert 1e-4 <= result["best_params"]["optim.lr"] <= 3e-3  # the preset's search space
