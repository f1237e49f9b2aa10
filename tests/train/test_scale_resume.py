"""Simulated SLURM preemption: SIGUSR1 -> hpc checkpoint + requeue -> resume in the same dir.

The job runs in-process with SLURM's environment variables set, so Lightning's
``SLURMEnvironment(auto_requeue=True)`` installs its SIGUSR1 handler exactly as on a
cluster; a fake ``scontrol`` on PATH records the requeue request. A callback sends the
signal after step 6 and then kills the run. The "requeued" job (``SLURM_RESTART_COUNT=1``,
no ``resume=`` given) must resume from the newest checkpoint and train on exactly the
batches an uninterrupted run trains on at steps 7..12.
"""

from __future__ import annotations

import csv
import os
import signal
import stat
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch

import vlexp.train.run as run_mod
from tests.conftest import compose_cfg

COMMON = [
    "debug=tiny_run", "data.source.num_train=128", "data.source.num_val=32",
    "data.source.num_test=32", "data.source.num_test_compositional=16", "data.batch_size=16",
    "trainer.max_steps=12", "trainer.val_check_interval=4", "test_after_fit=false",
    "viz.enabled=false", "trainer.log_every_n_steps=1",
]  # fmt: skip
PREEMPT_AT = 6


class Preempted(RuntimeError):
    """Stands for SLURM killing the job after the signal."""


class Recorder(L.Callback):
    """Training-set indices of every step's batch, and the step training started at."""

    def __init__(self, preempt_at: int | None = None) -> None:
        self.batches: dict[int, list[int]] = {}
        self.start_step: int | None = None
        self.preempt_at = preempt_at

    def on_train_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        self.start_step = trainer.global_step

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: Any, batch: Any, idx: int
    ) -> None:
        self.batches[trainer.global_step] = batch["index"].tolist()

    def on_train_batch_end(self, trainer: L.Trainer, *_: Any) -> None:
        if self.preempt_at is not None and trainer.global_step == self.preempt_at:
            os.kill(os.getpid(), signal.SIGUSR1)  # what sbatch --signal=USR1@120 sends
            raise Preempted(f"killed after step {trainer.global_step}")


def _train_with(recorder: Recorder, overrides: list[str], run_dir: Path, monkeypatch) -> Any:
    build = run_mod.build_trainer

    def with_recorder(cfg: Any, rd: Path) -> L.Trainer:
        trainer = build(cfg, rd)
        trainer.callbacks.append(recorder)
        return trainer

    monkeypatch.setattr(run_mod, "build_trainer", with_recorder)
    try:
        return run_mod.train(compose_cfg(overrides, output_dir=run_dir))
    finally:
        monkeypatch.setattr(run_mod, "build_trainer", build)


def _step_of(ckpt: Path) -> int:
    return int(torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"])


@pytest.mark.slow
def test_preemption_signal_checkpoints_requeues_and_resumes(tmp_path, monkeypatch):
    scontrol = tmp_path / "bin" / "scontrol"
    scontrol.parent.mkdir()
    calls = tmp_path / "scontrol.log"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    scontrol.chmod(scontrol.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{scontrol.parent}{os.pathsep}{os.environ['PATH']}")

    reference = Recorder()
    _train_with(reference, COMMON, tmp_path / "reference", monkeypatch)
    assert sorted(reference.batches) == list(range(12))

    slurm = {"SLURM_NTASKS": "1", "SLURM_JOB_NAME": "vlexp-test", "SLURM_JOB_ID": "4242",
             "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0",
             "SLURM_NODELIST": "localhost"}  # fmt: skip
    for key, value in slurm.items():
        monkeypatch.setenv(key, value)
    for key in ("SLURM_ARRAY_JOB_ID", "SLURM_RESTART_COUNT", "SLURM_NTASKS_PER_NODE"):
        monkeypatch.delenv(key, raising=False)
    job = tmp_path / "job"
    first = Recorder(preempt_at=PREEMPT_AT)
    with pytest.raises(Preempted):
        _train_with(first, COMMON, job, monkeypatch)
    hpc = job / "hpc_ckpt_1.ckpt"
    assert hpc.is_file(), "Lightning's SIGUSR1 handler writes the hpc checkpoint"
    assert _step_of(hpc) == PREEMPT_AT
    assert _step_of(job / "checkpoints" / "last.ckpt") == 4  # the older, periodic one
    assert calls.read_text().split() == ["requeue", "4242"]
    assert not (job / "metrics.json").exists()

    # the requeued job: same command, same run directory, SLURM counts the restart
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    second = Recorder()
    value = _train_with(second, COMMON, job, monkeypatch)
    assert second.start_step == PREEMPT_AT
    assert sorted(second.batches) == list(range(PREEMPT_AT, 12))
    assert value is not None and (job / "metrics.json").is_file()
    for step in range(PREEMPT_AT):
        assert first.batches[step] == reference.batches[step], f"step {step}"
    # the same batches as the uninterrupted run after the restart, step by step
    resumed = [second.batches[s] for s in range(PREEMPT_AT, 12)]
    expected = [reference.batches[s] for s in range(PREEMPT_AT, 12)]
    assert resumed == expected
    assert _step_of(job / "checkpoints" / "last.ckpt") == 12
    # the requeued job appended to the metric history: each step at most once, in order;
    # only step PREEMPT_AT - 1 is absent (the simulated kill fires before its row is logged)
    with open(job / "csv" / "metrics.csv", newline="") as f:
        logged = [int(r["step"]) for r in csv.DictReader(f) if r.get("train/loss")]
    assert logged == [s for s in range(12) if s != PREEMPT_AT - 1]
