"""Periodic checkpoints (``checkpoint.*``), the LR schedule a fit really uses, and the
TensorBoard logger: files at the right steps, K kept, atomic writes, exact resume."""

from __future__ import annotations

import csv
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch

import vlexp.train.run as run_mod
from tests.conftest import compose_cfg
from vlexp.train.callbacks import PARTIAL_PREFIX, AtomicCheckpointIO
from vlexp.train.periodic_checkpoints import (
    PeriodicCheckpoint,
    periodic_checkpoint_path,
    periodic_checkpoints,
)
from vlexp.train.slurm import find_resume_point

# 128 pairs / batch 16 = 8 steps per epoch; validation (and last.ckpt) at every epoch end
COMMON = [
    "debug=tiny_run", "data.source.num_train=128", "data.source.num_val=32",
    "data.source.num_test=32", "data.source.num_test_compositional=16", "data.batch_size=16",
    "trainer.max_steps=12", "trainer.val_check_interval=8", "trainer.log_every_n_steps=1",
    "test_after_fit=false", "viz.enabled=false", "trainer.deterministic=true",
    "checkpoint.every_n_steps=3", "checkpoint.every_n_epochs=1", "checkpoint.keep=2",
    "logger=tensorboard", "optim.schedule=const_cooldown", "optim.warmup_steps=2",
    "optim.cooldown_steps=4", "optim.min_lr_ratio=0.25", "optim.lr=0.002",
]  # fmt: skip
# LR factor of steps 0..11 by hand: warm-up (s + 1) / 2, 1 until step 12 - 4 = 8, then
# 0.25 + 0.75 * (1 - (s - 8) / 4)
FACTORS = [0.5, 1, 1, 1, 1, 1, 1, 1, 1, 0.8125, 0.625, 0.4375]


class Killed(RuntimeError):
    """Stands for the process dying after a training step."""


class Watcher(L.Callback):
    """The periodic checkpoint files present after each step; optional kill."""

    def __init__(self, dirpath: Path, kill_after: int | None = None) -> None:
        self.dirpath, self.kill_after = dirpath, kill_after
        self.files: dict[int, list[int]] = {}

    def on_train_batch_end(self, trainer: L.Trainer, *_: Any) -> None:
        self.files[trainer.global_step] = [s for s, _ in periodic_checkpoints(self.dirpath)]
        if self.kill_after is not None and trainer.global_step == self.kill_after:
            raise Killed(f"killed after step {trainer.global_step}")


def _train(run_dir: Path, watcher: Watcher, monkeypatch, extra: tuple[str, ...] = ()) -> None:
    build = run_mod.build_trainer

    def with_watcher(cfg: Any, rd: Path) -> L.Trainer:
        trainer = build(cfg, rd)
        trainer.callbacks.append(watcher)
        return trainer

    monkeypatch.setattr(run_mod, "build_trainer", with_watcher)
    try:
        run_mod.train(compose_cfg(COMMON + list(extra), output_dir=run_dir))
    finally:
        monkeypatch.setattr(run_mod, "build_trainer", build)


@pytest.mark.slow
def test_periodic_checkpoints_schedule_tensorboard_and_resume(tmp_path, monkeypatch, caplog):
    written: list[str] = []
    save = AtomicCheckpointIO.save_checkpoint

    def recording(self: Any, checkpoint: Any, path: Any, storage_options: Any = None) -> None:
        written.append(Path(path).name)
        save(self, checkpoint, path, storage_options)

    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", recording)
    ref_dir = tmp_path / "reference"
    ref = Watcher(ref_dir / "checkpoints")
    _train(ref_dir, ref, monkeypatch)

    # every 3 steps and after the last step of epoch 1 (step 8), the newest 2 kept
    want = {1: [], 2: [], 3: [3], 5: [3], 6: [3, 6], 8: [6, 8], 9: [8, 9], 11: [8, 9], 12: [9, 12]}
    assert {s: ref.files[s] for s in want} == want
    ckpts = ref_dir / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == [
        "best.ckpt", "last.ckpt", "step-00000009.ckpt", "step-00000012.ckpt"
    ]  # fmt: skip
    steps = [3, 6, 8, 9, 12]
    assert [n for n in written if n.startswith("step-")] == [f"step-{s:08d}.ckpt" for s in steps]
    assert not list(ckpts.glob(f"{PARTIAL_PREFIX}*"))  # written through the atomic writer
    assert torch.load(ckpts / "step-00000009.ckpt", weights_only=True)["global_step"] == 9

    # the LR each step used: optim.lr x the hand-computed const_cooldown factors
    with open(ref_dir / "csv" / "metrics.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("lr-AdamW/pg1")]
    lrs = {int(r["step"]): float(r["lr-AdamW/pg1"]) for r in rows}
    assert [lrs[s] for s in range(12)] == pytest.approx([0.002 * f for f in FACTORS], rel=1e-9)

    # TensorBoard: an events file that TensorBoard's own reader parses to the same LRs
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = list((ref_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert events
    acc = EventAccumulator(str(ref_dir / "tensorboard"))
    acc.Reload()
    tb = {e.step: e.value for e in acc.Scalars("lr-AdamW/pg1")}
    assert [tb[s] for s in range(12)] == pytest.approx([0.002 * f for f in FACTORS], rel=1e-6)
    assert (ref_dir / "tensorboard" / "hparams.yaml").is_file()

    # killed after step 10: last.ckpt is from step 8, the periodic step 9 is newer
    run = tmp_path / "run"
    with pytest.raises(Killed):
        _train(run, Watcher(run / "checkpoints", kill_after=10), monkeypatch)
    point = find_resume_point("auto", run)
    assert point.path == str(periodic_checkpoint_path(run / "checkpoints", 9)) and point.step == 9
    epoch_end = tmp_path / "epoch_end.ckpt"  # the end-of-epoch-1 checkpoint, kept aside
    shutil.copy(periodic_checkpoint_path(run / "checkpoints", 8), epoch_end)
    caplog.set_level(logging.INFO, logger="vlexp")
    _train(run, Watcher(run / "checkpoints"), monkeypatch, ("resume=auto",))
    assert "at step 9" in caplog.text
    a = torch.load(ref_dir / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 12
    for k in a["state_dict"]:
        torch.testing.assert_close(b["state_dict"][k], a["state_dict"][k], rtol=1e-5, atol=1e-6)
    assert [s for s, _ in periodic_checkpoints(run / "checkpoints")] == [9, 12]
    # a fit started from the end-of-epoch checkpoint (another directory) ends the same
    other = tmp_path / "from_epoch_end"
    _train(other, Watcher(other / "checkpoints"), monkeypatch, (f"resume={epoch_end}",))
    c = torch.load(other / "checkpoints" / "last.ckpt", weights_only=True)
    assert c["global_step"] == 12
    for k in a["state_dict"]:
        torch.testing.assert_close(c["state_dict"][k], a["state_dict"][k], rtol=1e-5, atol=1e-6)
    # TensorBoard hides the killed run's step 9 and 10 (purge_step=9): each step once
    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    steps_run = [e.step for e in acc.Scalars("lr-AdamW/pg1")]
    assert steps_run == list(range(12))


# ------------------------------------------------------------------ units
def _touch(path: Path, step: int, mtime: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"global_step": step}, path)
    os.utime(path, (mtime, mtime))
    return path


def test_prune_keeps_the_newest_k_and_drops_files_past_the_current_step(tmp_path):
    for i, s in enumerate([2, 4, 6, 8, 20]):
        _touch(periodic_checkpoint_path(tmp_path, s), s, 1000 + i)
    (tmp_path / "last.ckpt").write_bytes(b"x")
    (tmp_path / "step-notes.ckpt").write_bytes(b"x")  # not a periodic name: left alone
    PeriodicCheckpoint(tmp_path, every_n_steps=2, keep=2)._prune(8)
    assert [s for s, _ in periodic_checkpoints(tmp_path)] == [6, 8]
    assert (tmp_path / "last.ckpt").is_file() and (tmp_path / "step-notes.ckpt").is_file()
    for s in (10, 12):
        _touch(periodic_checkpoint_path(tmp_path, s), s, 2000 + s)
    PeriodicCheckpoint(tmp_path, every_n_steps=2, keep=-1)._prune(12)
    assert [s for s, _ in periodic_checkpoints(tmp_path)] == [6, 8, 10, 12]


def test_resume_auto_takes_the_newest_of_last_and_periodic(tmp_path):
    ckpts = tmp_path / "checkpoints"
    _touch(ckpts / "last.ckpt", 8, 1000)
    _touch(periodic_checkpoint_path(ckpts, 6), 6, 900)
    assert find_resume_point("auto", tmp_path).step == 8
    _touch(periodic_checkpoint_path(ckpts, 9), 9, 1100)
    point = find_resume_point("auto", tmp_path)
    assert point.step == 9 and point.path.endswith("step-00000009.ckpt")


def test_callback_needs_a_period_and_a_valid_keep(tmp_path):
    with pytest.raises(ValueError, match="every_n_steps or every_n_epochs"):
        PeriodicCheckpoint(tmp_path)
    with pytest.raises(ValueError, match="checkpoint.keep"):
        PeriodicCheckpoint(tmp_path, every_n_steps=1, keep=0)
    assert run_mod.periodic_checkpoint_callbacks(compose_cfg([]), tmp_path) == []
    (cb,) = run_mod.periodic_checkpoint_callbacks(
        compose_cfg(["checkpoint.every_n_epochs=2", "checkpoint.keep=5"]), tmp_path
    )
    assert (cb.every_n_steps, cb.every_n_epochs, cb.keep) == (None, 2, 5)
