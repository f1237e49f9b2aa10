"""A run killed mid-epoch and resumed in place equals an uninterrupted run.

Default (random) crops, checkpoints at every 4th step, 8 batches per epoch; the
interrupted run dies after step 6 (its newest checkpoint, step 4, is mid-epoch), the
resumed one trains steps 5..12 with ``resume=auto``. Compared with one uninterrupted run:
the final weights, the batches of every step, and the CSV metric history.
"""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

import vlexp.train.run as run_mod
from tests.conftest import compose_cfg
from vlexp.data.pipeline import KeyedBatches, KeyedPairs, TrainTransform, augmentation_seed

COMMON = [
    "debug=tiny_run", "data.source.num_train=128", "data.source.num_val=32",
    "data.source.num_test=32", "data.source.num_test_compositional=16", "data.batch_size=16",
    "trainer.max_steps=12", "trainer.val_check_interval=4", "trainer.log_every_n_steps=1",
    "test_after_fit=false", "viz.enabled=false", "trainer.deterministic=true",
]  # fmt: skip
KILL_AFTER = 6


class Killed(RuntimeError):
    """Stands for the process dying (kill -9, node failure) after a training step."""


class Recorder(L.Callback):
    """Training-set indices and pixel checksums of every step's batch; optional kill."""

    def __init__(self, kill_after: int | None = None) -> None:
        self.batches: dict[int, tuple[list[int], float]] = {}
        self.kill_after = kill_after

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: Any, batch: Any, i: int) -> None:
        pixels = float(batch["image"].double().sum())
        self.batches[trainer.global_step] = (batch["index"].tolist(), pixels)

    def on_train_batch_end(self, trainer: L.Trainer, *_: Any) -> None:
        if self.kill_after is not None and trainer.global_step == self.kill_after:
            raise Killed(f"killed after step {trainer.global_step}")


def _train(overrides: list[str], run_dir: Path, recorder: Recorder, monkeypatch) -> Any:
    build = run_mod.build_trainer

    def with_recorder(cfg: Any, rd: Path) -> L.Trainer:
        trainer = build(cfg, rd)
        trainer.callbacks.append(recorder)
        return trainer

    monkeypatch.setattr(run_mod, "build_trainer", with_recorder)
    try:
        return run_mod.train(compose_cfg(COMMON + overrides, output_dir=run_dir))
    finally:
        monkeypatch.setattr(run_mod, "build_trainer", build)


def _csv_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "csv" / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


# wall-clock figures (train/samples_per_s, train/step_s, train/data_wait_frac) differ run to run
TIMING = ("train/samples_per_s", "train/step_s", "train/data_wait_frac")


def _same_row(a: dict[str, str], b: dict[str, str]) -> bool:
    if a.keys() != b.keys():
        return False
    for k in a:
        if k in TIMING:
            continue
        if (a[k] == "") != (b[k] == ""):
            return False
        if a[k] and not math.isclose(float(a[k]), float(b[k]), rel_tol=1e-4, abs_tol=1e-6):
            return False
    return True


@pytest.mark.slow
def test_mid_epoch_kill_then_resume_auto_matches_uninterrupted(
    tmp_path, monkeypatch, caplog, recwarn
):
    reference = Recorder()
    _train([], tmp_path / "reference", reference, monkeypatch)

    run = tmp_path / "run"
    first = Recorder(kill_after=KILL_AFTER)
    with pytest.raises(Killed):  # two loader workers here, none in the reference run
        _train(["data.num_workers=2"], run, first, monkeypatch)
    last = run / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 4

    caplog.set_level(logging.INFO, logger="vlexp")
    recwarn.clear()
    second = Recorder()
    _train(["resume=auto"], run, second, monkeypatch)
    assert f"resuming from {last} at step 4" in caplog.text
    warned = " | ".join(str(w.message) for w in recwarn)
    assert "not resumable" not in warned and "will be deleted" not in warned

    # same batches and the same (randomly cropped) pixels at every step
    assert sorted(second.batches) == list(range(4, 12))
    for step in range(12):
        got = first.batches[step] if step < 4 else second.batches[step]
        assert got[0] == reference.batches[step][0], f"indices of step {step}"
        assert math.isclose(got[1], reference.batches[step][1], rel_tol=1e-9), f"step {step}"
    # same final weights
    a = torch.load(tmp_path / "reference" / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(last, weights_only=True)
    assert a["global_step"] == b["global_step"] == 12
    for k in a["state_dict"]:
        torch.testing.assert_close(b["state_dict"][k], a["state_dict"][k], rtol=1e-5, atol=1e-6)
    # the metric history holds every step once, as the uninterrupted run logged it
    expected, got_rows = _csv_rows(tmp_path / "reference"), _csv_rows(run)
    assert [r["step"] for r in got_rows] == [r["step"] for r in expected]
    for r_exp, r_got in zip(expected, got_rows, strict=True):
        assert _same_row(r_exp, r_got), (r_exp, r_got)


# ------------------------------------------------------------------ per-sample crops
def test_crop_depends_only_on_its_seed_and_leaves_the_global_rng_alone():
    tf = TrainTransform(32, (0.5,) * 3, (0.5,) * 3, crop_scale=(0.2, 1.0))
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 120, 3), np.uint8))
    seed = augmentation_seed(0, 3, 17)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    box = tf.crop_box(image, seed)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG was not consumed
    torch.rand(5)  # whatever else the process draws does not change the crop
    assert tf.crop_box(image, seed) == box
    torch.testing.assert_close(tf(image, seed), tf(image, seed), rtol=0, atol=0)
    # seeded from the global RNG it is torchvision's RandomResizedCrop, draw for draw
    torch.manual_seed(5)
    ours = [tf.crop_box(image) for _ in range(20)]
    torch.manual_seed(5)
    ref = [T.RandomResizedCrop.get_params(image, [0.2, 1.0], [0.9, 1.1]) for _ in range(20)]
    assert ours == ref
    # another epoch, sample or run seed draws another crop
    others = {augmentation_seed(0, 4, 17), augmentation_seed(0, 3, 18), augmentation_seed(1, 3, 17)}
    assert seed not in others and len(others) == 3
    assert len({tf.crop_box(image, s) for s in [seed, *others]}) > 1


class _Planned:
    """A stand-in planned sampler: two batches per epoch, epoch chosen by ``set_epoch``."""

    epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return 2

    def __iter__(self):
        yield from ([0, 1], [2, 3])


def test_keyed_loader_items_carry_the_epoch_seed():
    planned = _Planned()
    batches = KeyedBatches(planned)
    assert batches.sampler is planned  # where Lightning calls set_epoch
    planned.set_epoch(2)
    assert list(batches) == [[(2, 0), (2, 1)], [(2, 2), (2, 3)]]
    pairs = KeyedPairs([{"index": i, "caption": "c"} for i in range(4)], seed=7)
    item = pairs[(2, 3)]
    assert item["index"] == 3 and item["aug_seed"] == augmentation_seed(7, 2, 3)
