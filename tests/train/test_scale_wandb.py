"""wandb offline run directory: files, grouping, flat config, tags, images, exit codes.

The ``.wandb`` file is read back with a small reader of its framing (a LevelDB-style
log of protobuf ``Record`` messages, the format ``wandb sync`` uploads), independent of
vlexp's own code.
"""

from __future__ import annotations

import struct
import time
from pathlib import Path

import pytest

from vlexp.train.run import train
from vlexp.train.sweep import record_failure

TINY = [
    "debug=tiny_run", "logger=wandb", "data.source.num_train=128", "data.source.num_val=32",
    "data.source.num_test=32", "data.source.num_test_compositional=16", "data.batch_size=16",
    "trainer.max_steps=4", "trainer.val_check_interval=4", "trainer.log_every_n_steps=2",
    "test_after_fit=false", "viz.num_images=8", "viz.num_queries=2",
]  # fmt: skip

_BLOCK = 32768
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def read_wandb_records(path: Path) -> list:
    """Protobuf records of a ``run-<id>.wandb`` file (7-byte header, 32 KiB blocks)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", "not a wandb transaction log"
    pos, pending, chunks = 7, b"", []
    while pos + 7 <= len(data):
        if _BLOCK - pos % _BLOCK < 7:  # block trailer too small for a header: padding
            pos += _BLOCK - pos % _BLOCK
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        body = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == _FULL:
            chunks.append(body)
        elif kind == _FIRST:
            pending = body
        elif kind == _MIDDLE:
            pending += body
        elif kind == _LAST:
            chunks.append(pending + body)
    records = []
    for chunk in chunks:
        rec = pb.Record()
        rec.ParseFromString(chunk)
        records.append(rec)
    return records


def complete_records(wb_file: Path, timeout: float = 60.0) -> list:
    """Records of ``wb_file`` once its exit record is there.

    ``wandb.finish()`` returns before wandb's writer process has flushed the file, so a
    test that reads it in the same process waits for the last record.
    """
    deadline = time.monotonic() + timeout
    while True:
        records = read_wandb_records(wb_file)
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            return records
        assert time.monotonic() < deadline, f"{wb_file}: no exit record after {timeout} s"
        time.sleep(0.2)


def _of_kind(records: list, kind: str) -> list:
    return [r for r in records if r.WhichOneof("record_type") == kind]


@pytest.mark.slow
def test_wandb_offline_run_directory(make_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = make_cfg(TINY + ["tags=[scale-test]"])
    train(cfg)
    import wandb

    if wandb.run is not None:  # Lightning leaves the run open; close it like process exit does
        wandb.run.finish()
    run = tmp_path / "run"
    offline = sorted((run / "wandb").glob("offline-run-*"))
    assert len(offline) == 1, "exactly one wandb run in the run directory"
    wb_files = list(offline[0].glob("run-*.wandb"))
    assert len(wb_files) == 1
    images = sorted(
        p.name.split("_")[0]
        for p in (offline[0] / "files" / "media" / "images" / "viz").glob("*.png")
    )
    assert images == ["retrieval", "schedules", "similarity"]
    assert (run / "viz" / "schedules.png").is_file()  # the same plots as files
    assert (run / "viz" / "similarity_step000004.png").is_file()

    records = complete_records(wb_files[0])
    (run_rec,) = [r.run for r in _of_kind(records, "run")]
    assert run_rec.project == "vlexp"
    assert run_rec.run_group == "train"  # no sweep, no experiment: the task name
    assert set(run_rec.tags) >= {
        "objective:clip",
        "sampler:random",
        "filter:none",
        "encoder:tiny",
        "scale-test",
    }
    config = {item.key for item in run_rec.config.update}
    assert {
        "objective.name",
        "optim.lr",
        "trainer.max_steps",
        "data.source.num_train",
        "model_opts.grad_checkpointing",
    } <= config  # the full config, flat
    history_keys = {
        "/".join(i.nested_key) or i.key
        for h in _of_kind(records, "history")
        for i in h.history.item
    }
    assert {"val/mean_R@1", "train/loss", "train/loss_i2t"} <= history_keys
    (exit_rec,) = _of_kind(records, "exit")
    assert exit_rec.exit.exit_code == 0


def test_failed_job_closes_wandb_with_exit_code_1(tmp_path, monkeypatch):
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    wandb.init(
        project="vlexp",
        dir=str(tmp_path),
        mode="offline",
        settings=wandb.Settings(silent=True, console="off"),
    )
    try:
        raise RuntimeError("boom in step 3")
    except RuntimeError as exc:
        error = record_failure(tmp_path, exc)
    assert wandb.run is None
    assert "RuntimeError: boom in step 3" in error.read_text()
    (wb_file,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    (exit_rec,) = _of_kind(complete_records(wb_file), "exit")
    assert exit_rec.exit.exit_code == 1
