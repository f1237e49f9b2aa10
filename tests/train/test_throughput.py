"""Training speed in every log: the step timing, its metrics, the text progress lines.

Timing numbers are checked against hand-computed values from a scripted clock, the
data-wait share against a loader and a step that sleep for known times, and a real run
with stdout redirected to a pipe (not a terminal) against the fields the lines promise.
"""

from __future__ import annotations

import csv
import logging
import re
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from tests.conftest import compose_cfg
from vlexp.config import ConfigError, validate_config
from vlexp.train.throughput import ProgressOptions, ThroughputLog, format_duration

REPO = Path(__file__).resolve().parents[2]
LINE = re.compile(
    r"step (\d+)/(\d+) \| loss ([\d.]+) \| (\d+) samples/s \| data wait (\d+)% \| ETA (\S+)$"
)


class ScriptedClock:
    """Returns the times it is given, one per call."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Recorder:
    """Stands in for the LightningModule: keeps what ``log`` received."""

    def __init__(self) -> None:
        self.logged: list[dict[str, float]] = []

    def log(self, name: str, value: float, **kwargs) -> None:
        if not self.logged or name in self.logged[-1]:
            self.logged.append({})
        self.logged[-1][name] = value


def test_scripted_steps_give_hand_computed_rates_and_lines(caplog):
    clock = ScriptedClock()
    opts = ProgressOptions(lines="always", every_steps=2, every_s=0)
    cb = ThroughputLog(opts, monitor="val/mean_R@1", is_terminal=True, clock=clock)
    trainer = SimpleNamespace(
        global_step=0, world_size=2, is_global_zero=True, log_every_n_steps=2,
        estimated_stepping_batches=4, sanity_checking=False, callback_metrics={},
    )  # fmt: skip
    module = Recorder()
    batch = {"image": torch.zeros(4, 3, 2, 2)}  # 4 rows per process, 2 processes
    loss = {"loss": torch.tensor(1.5)}

    def step(start: float, end: float) -> None:
        clock.now = start
        cb.on_train_batch_start(trainer, module, batch, 0)
        clock.now = end
        trainer.global_step += 1
        cb.on_train_batch_end(trainer, module, loss, batch, 0)

    with caplog.at_level(logging.INFO, logger="vlexp"):
        cb.on_train_start(trainer, module)
        step(1.0, 1.5)  # the first step: not timed
        assert module.logged == []
        step(1.7, 2.0)  # wait 0.2, compute 0.3, 8 samples
        assert module.logged[-1] == pytest.approx(
            {"train/samples_per_s": 16.0, "train/step_s": 0.5, "train/data_wait_frac": 0.4}
        )
        step(2.2, 2.8)  # wait 0.2, compute 0.6; the window holds the last 2 steps
        assert module.logged[-1] == pytest.approx(
            {
                "train/samples_per_s": 16 / 1.3,
                "train/step_s": 0.65,
                "train/data_wait_frac": 0.4 / 1.3,
            }
        )
        clock.now = 3.0
        cb.on_validation_start(trainer, module)
        trainer.callback_metrics = {"val/mean_R@1": torch.tensor(0.25)}
        clock.now = 4.5
        cb.on_validation_end(trainer, module)
        step(5.0, 5.5)  # after validation: not timed, so no new metrics
        assert len(module.logged) == 2
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        # ETA after step 2: 2 steps left x (2.0 - 1.0) s / 2 steps
        "step 2/4 | loss 1.5 | 16 samples/s | data wait 40% | ETA 1s",
        "validation at step 3/4 (2s): val/mean_R@1 0.2500 (1 val metrics logged)",
        # since the last line only step 3 was timed: 8 samples / 0.8 s, waiting 0.2 s
        "step 4/4 | loss 1.5 | 10 samples/s | data wait 25% | ETA 0s",
    ]


def test_lines_follow_the_terminal_test():
    assert ProgressOptions().prints_lines(is_terminal=False)
    assert not ProgressOptions().prints_lines(is_terminal=True)
    assert ProgressOptions(lines="always").prints_lines(is_terminal=True)
    assert not ProgressOptions(lines="never").prints_lines(is_terminal=False)


def test_a_line_is_due_by_time_alone(caplog):
    clock = ScriptedClock()
    cb = ThroughputLog(ProgressOptions("always", 0, 10.0), is_terminal=False, clock=clock)
    trainer = SimpleNamespace(
        global_step=0, world_size=1, is_global_zero=True, log_every_n_steps=50,
        estimated_stepping_batches=100, sanity_checking=False, callback_metrics={},
    )  # fmt: skip
    batch, module = {"image": torch.zeros(2, 1)}, Recorder()
    with caplog.at_level(logging.INFO, logger="vlexp"):
        cb.on_train_start(trainer, module)
        for t in (1.0, 4.0, 7.0, 10.0, 13.0, 16.0, 19.0, 22.0, 25.0):  # steps end at t + 2
            clock.now = t
            cb.on_train_batch_start(trainer, module, batch, 0)
            clock.now = t + 2.0
            trainer.global_step += 1
            cb.on_train_batch_end(trainer, module, {"loss": 1.0}, batch, 0)
    steps = [int(LINE.match(r.getMessage()).group(1)) for r in caplog.records]
    assert steps == [4, 8]  # ending at 12 s (>= 0 + 10) and at 24 s (>= 12 + 10)


@pytest.mark.parametrize(
    "seconds, text", [(5.4, "5s"), (65, "1m05s"), (3725, "1h02m"), (float("inf"), "?")]
)
def test_durations_read_like_a_clock(seconds, text):
    assert format_duration(seconds) == text


# ------------------------------------------------------------------ real Lightning loop
class _Tiny(L.LightningModule):
    def __init__(self, step_sleep: float) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.step_sleep = step_sleep

    def training_step(self, batch, batch_idx):
        time.sleep(self.step_sleep)
        return self.layer(batch["image"]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _wait_share(loader_sleep: float, step_sleep: float, tmp_path: Path) -> dict[str, float]:
    """Metrics of an 8-step fit whose loader and step sleep the given seconds per batch."""

    def collate(rows):
        time.sleep(loader_sleep)
        return {"image": torch.stack(rows)}

    data = DataLoader(list(torch.randn(64, 2)), batch_size=4, collate_fn=collate)
    seen: list[dict[str, float]] = []

    class Keep(L.Callback):
        def on_train_batch_end(self, trainer, *args):
            m = trainer.callback_metrics
            if "train/data_wait_frac" in m:
                seen.append({k: float(v) for k, v in m.items() if k.startswith("train/")})

    trainer = L.Trainer(
        max_steps=8, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, log_every_n_steps=4, default_root_dir=str(tmp_path),
        callbacks=[ThroughputLog(ProgressOptions(lines="never")), Keep()],
    )  # fmt: skip
    trainer.fit(_Tiny(step_sleep), data)
    return seen[-1]


def test_data_wait_share_follows_where_the_time_goes(tmp_path):
    slow_loader = _wait_share(0.1, 0.0, tmp_path)
    slow_step = _wait_share(0.0, 0.1, tmp_path)
    assert slow_loader["train/data_wait_frac"] > 0.7
    assert slow_step["train/data_wait_frac"] < 0.3
    for m in (slow_loader, slow_step):
        assert m["train/step_s"] >= 0.1  # the sleep is part of every step
        assert m["train/samples_per_s"] == pytest.approx(4 / m["train/step_s"], rel=1e-6)


# ------------------------------------------------------------------ config
@pytest.mark.parametrize(
    "override, key",
    [
        ("progress.every_steps=-1", "progress.every_steps=-1"),
        ("progress.every_s=soon", "progress.every_s=soon"),
        ("progress.lines=sometimes", "progress.lines=sometimes"),
        ("+progress.colour=red", "progress.colour: unknown option"),
    ],
)
def test_bad_progress_options_name_the_key(override, key):
    with pytest.raises(ConfigError, match=re.escape(key)):
        validate_config(compose_cfg([override]))


def test_no_trigger_at_all_is_refused():
    with pytest.raises(ConfigError, match="no line would ever be written"):
        validate_config(compose_cfg(["progress.every_steps=0", "progress.every_s=0"]))
    validate_config(
        compose_cfg(["progress.every_steps=0", "progress.every_s=0", "progress.lines=never"])
    )


# ------------------------------------------------------------------ a run into a pipe
@pytest.mark.slow
def test_redirected_run_writes_progress_lines_and_throughput_metrics(tmp_path):
    run = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "vlexp.run", "debug=tiny_run", "viz.enabled=false",
        "test_after_fit=false", "trainer.max_steps=12", "trainer.val_check_interval=6",
        "trainer.log_every_n_steps=2", "progress.every_steps=3", "optim.accum_freq=2",
        f"hydra.run.dir={run}",
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    steps = []
    for text in out.splitlines():
        m = LINE.search(text)
        if m:
            steps.append(int(m.group(1)))
            assert int(m.group(2)) == 12 and float(m.group(3)) > 0 and int(m.group(4)) > 0
            assert 0 <= int(m.group(5)) <= 100
    assert steps == [3, 6, 9, 12]
    assert (
        len(re.findall(r"validation at step (?:6|12)/12 \(.*\): val/mean_R@1 0\.\d{4}", out)) == 2
    )
    assert "on: precision 32-true (everything in float32)" in out
    assert "on: gradient accumulation (optim.accum_freq=2: towers in 2 micro-batches" in out
    with open(run / "csv" / "metrics.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/samples_per_s")]
    assert rows, "no throughput rows in metrics.csv"
    for r in rows:
        assert float(r["train/samples_per_s"]) > 0 and float(r["train/step_s"]) > 0
        assert 0 <= float(r["train/data_wait_frac"]) <= 1
        # one batch of 32 rows per step: samples/s x step time = 32 (same window)
        assert float(r["train/samples_per_s"]) * float(r["train/step_s"]) == pytest.approx(32)
