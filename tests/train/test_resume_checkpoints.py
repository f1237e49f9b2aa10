"""Crash-safe checkpoint writes, resume=auto over damaged checkpoints, CSV history on resume."""

from __future__ import annotations

import csv
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import vlexp.train.callbacks as callbacks_mod
from vlexp.io import UnreadableFileError
from vlexp.train.callbacks import (
    PARTIAL_PREFIX,
    PARTIAL_SUFFIX,
    AtomicCheckpointIO,
    LastCheckpoint,
    remove_partial_checkpoints,
)
from vlexp.train.loggers import HistoryCSVLogger
from vlexp.train.slurm import find_resume_point, log_resume_point

REPO = Path(__file__).resolve().parents[2]


def _ckpt(path: Path, step: int, mtime: float | None = None) -> Path:
    """A small checkpoint with Lightning's ``global_step`` key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"global_step": step, "state_dict": {"w": torch.full((64, 64), float(step))}}, path)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def _partials(*dirs: Path) -> list[Path]:
    return [p for d in dirs for p in d.glob(f"{PARTIAL_PREFIX}*{PARTIAL_SUFFIX}")]


# ------------------------------------------------------------------ atomic writes
def test_failed_write_keeps_the_previous_checkpoint_and_no_temp_file(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    last = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "w": torch.ones(3)}, last)
    before = last.read_bytes()

    def dies_half_way(obj, f):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("No space left on device")

    monkeypatch.setattr(callbacks_mod.torch, "save", dies_half_way)
    with pytest.raises(OSError, match="No space"):
        io.save_checkpoint({"global_step": 2, "w": torch.zeros(3)}, last)
    assert last.read_bytes() == before
    assert torch.load(last, weights_only=True)["global_step"] == 1
    assert _partials(last.parent) == []


KILLED_WRITER = textwrap.dedent(
    """
    import sys, torch
    from vlexp.train.callbacks import AtomicCheckpointIO

    io, big = AtomicCheckpointIO(), torch.ones(16 * 2**20)  # 64 MB per write
    for step in range(10_000):
        io.save_checkpoint({"global_step": step, "w": big}, sys.argv[1])
        print(step, flush=True)
    """
)


@pytest.mark.slow
def test_kill_during_a_write_leaves_the_last_complete_checkpoint(tmp_path):
    last = tmp_path / "checkpoints" / "last.ckpt"
    # $TMPDIR on another filesystem: where a copy-into-place writer truncates last.ckpt
    tmpdir = "/dev/shm" if os.path.isdir("/dev/shm") else os.environ.get("TMPDIR", "/tmp")
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": tmpdir}
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(last)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "0"
        deadline = time.time() + 60
        while time.time() < deadline and not _partials(last.parent):  # a write under way
            time.sleep(0.001)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert _partials(last.parent), "killed between writes; the check needs a write under way"
    state = torch.load(last, map_location="cpu", weights_only=True, mmap=True)
    assert state["global_step"] >= 0 and state["w"].numel() == 16 * 2**20
    assert find_resume_point("auto", tmp_path).path == str(last)
    removed = remove_partial_checkpoints(last.parent)
    assert removed and _partials(last.parent) == []


def test_a_fit_start_removes_leftover_temp_files(tmp_path):
    ckpt_dir = tmp_path / "checkpoints"
    stale = [
        ckpt_dir / f"{PARTIAL_PREFIX}123-ab{PARTIAL_SUFFIX}",
        tmp_path / f"{PARTIAL_PREFIX}9-c{PARTIAL_SUFFIX}",
    ]
    for p in stale:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x" * 1000)
    keep = _ckpt(ckpt_dir / "last.ckpt", 3)
    trainer = SimpleNamespace(is_global_zero=True, default_root_dir=str(tmp_path))
    LastCheckpoint(ckpt_dir).setup(trainer, None, "fit")  # type: ignore[arg-type]
    assert not any(p.exists() for p in stale) and keep.is_file()


# ------------------------------------------------------------------ resume=auto fallbacks
def test_zero_byte_last_falls_back_to_the_hpc_checkpoint(tmp_path, caplog):
    hpc = _ckpt(tmp_path / "hpc_ckpt_1.ckpt", 6, mtime=1000)
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.parent.mkdir()
    last.write_bytes(b"")  # killed while Lightning copied it into place
    point = find_resume_point("auto", tmp_path)
    assert (point.path, point.step) == (str(hpc), 6)
    assert [p for p, _ in point.skipped] == [str(last)]
    caplog.set_level(logging.INFO, logger="vlexp")
    log_resume_point(point, "auto")
    assert f"skipping unreadable checkpoint {last}" in caplog.text
    assert f"resume=auto: resuming from {hpc} at step 6" in caplog.text


def test_truncated_last_falls_back_to_best(tmp_path):
    best = _ckpt(tmp_path / "checkpoints" / "best.ckpt", 4, mtime=1000)
    last = _ckpt(tmp_path / "checkpoints" / "last.ckpt", 8, mtime=2000)
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])
    point = find_resume_point("auto", tmp_path)
    assert (point.path, point.step) == (str(best), 4)
    assert point.skipped[0][0] == str(last) and "truncated" in point.skipped[0][1]


def test_newest_readable_wins_and_all_unreadable_starts_fresh(tmp_path, caplog):
    old = _ckpt(tmp_path / "hpc_ckpt_1.ckpt", 2, mtime=1000)
    new = _ckpt(tmp_path / "checkpoints" / "last.ckpt", 5, mtime=2000)
    assert find_resume_point("auto", tmp_path).path == str(new)
    new.write_bytes(b"")
    old.write_bytes(b"garbage")
    point = find_resume_point("auto", tmp_path)
    assert point.path is None and len(point.skipped) == 2
    caplog.set_level(logging.INFO, logger="vlexp")
    log_resume_point(point, "auto")
    assert f"no usable checkpoint in {tmp_path}: starting fresh" in caplog.text


def test_empty_run_dir_logs_a_fresh_start(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="vlexp")
    log_resume_point(find_resume_point("auto", tmp_path), "auto")
    assert "resume=auto: no usable checkpoint" in caplog.text and "starting fresh" in caplog.text


def test_an_explicit_damaged_file_is_an_error_naming_it(tmp_path):
    bad = tmp_path / "x.ckpt"
    bad.write_bytes(b"")
    with pytest.raises(UnreadableFileError, match=str(bad)):
        find_resume_point(str(bad), tmp_path)


# ------------------------------------------------------------------ CSV history
def _write_csv(path: Path, rows: list[dict[str, object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["epoch", "step", "train/loss"])
        w.writeheader()
        w.writerows(rows)


def test_resumed_csv_keeps_rows_before_the_checkpoint_and_appends(tmp_path):
    old = [{"epoch": 0, "step": s, "train/loss": 10 - s} for s in range(7)]
    _write_csv(tmp_path / "csv" / "metrics.csv", old)
    logger = HistoryCSVLogger(tmp_path, resumed_at=4)  # checkpoint at global_step 4
    for s in range(4, 6):
        logger.log_metrics({"train/loss": 20.0 + s, "val/R@1": 0.5}, step=s)
    logger.save()
    with open(tmp_path / "csv" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [0, 1, 2, 3, 4, 5]
    assert [float(r["train/loss"]) for r in rows] == [10, 9, 8, 7, 24, 25]
    assert [r["val/R@1"] for r in rows] == ["", "", "", "", "0.5", "0.5"]
    assert rows[0]["epoch"] == "0" and rows[4]["epoch"] == ""


def test_fresh_csv_logger_starts_a_new_file(tmp_path):
    _write_csv(tmp_path / "csv" / "metrics.csv", [{"epoch": 0, "step": 0, "train/loss": 1}])
    logger = HistoryCSVLogger(tmp_path)
    with pytest.warns(UserWarning, match="will be deleted"):
        logger.log_metrics({"train/loss": 3.0}, step=0)
    logger.save()
    with open(tmp_path / "csv" / "metrics.csv", newline="") as f:
        assert [float(r["train/loss"]) for r in csv.DictReader(f)] == [3.0]
