"""Training speed in every log: samples/s, step time and the share spent waiting for data.

:class:`ThroughputLog` times each optimizer step from Lightning's batch hooks and logs
``train/samples_per_s``, ``train/step_s`` and ``train/data_wait_frac`` (means over the
last ``trainer.log_every_n_steps`` steps) to every logger. When stdout is not a terminal
(``make train > log``), where a progress bar shows nothing until the end, it also writes
a text line every ``progress.every_steps`` steps or ``progress.every_s`` seconds,
whichever comes first, and one line per validation:

``step 150/1000 | loss 2.314 | 412 samples/s | data wait 12% | ETA 3m05s``

A step's *wait* is the time from the end of one training batch to the start of the next
(the loader producing it, plus logging between steps); its *compute* is from the start
to the end of the batch (forward, backward, optimizer). The first step of a fit and the
first after each validation are not timed, so validation never counts as data wait.
Times are the host's (no CUDA synchronisation, which would cost speed): on a GPU, work
still queued when the host next waits for it counts in that later interval.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch

log = logging.getLogger("vlexp")

LINE_MODES = ("auto", "always", "never")


@dataclass(frozen=True)
class ProgressOptions:
    """The ``progress`` config block (validated in :mod:`vlexp.config`)."""

    lines: str = "auto"  # auto: text lines only when stdout is not a terminal
    every_steps: int = 50  # a line every N steps (0: no step trigger)
    every_s: float = 30.0  # a line every S seconds (0: no time trigger)

    @classmethod
    def from_config(cls, block: Any) -> ProgressOptions:
        """From the config's ``progress`` block (absent in older run configs: defaults)."""
        return cls(**dict(block or {}))

    def prints_lines(self, is_terminal: bool) -> bool:
        """Whether text lines are written, given whether stdout is a terminal."""
        return self.lines == "always" or (self.lines == "auto" and not is_terminal)


@dataclass
class Window:
    """Sums over some timed steps."""

    steps: int = 0
    samples: int = 0
    wait_s: float = 0.0
    compute_s: float = 0.0

    def add(self, samples: int, wait_s: float, compute_s: float) -> None:
        """Count one timed step."""
        self.steps += 1
        self.samples += samples
        self.wait_s += wait_s
        self.compute_s += compute_s

    @property
    def wall_s(self) -> float:
        """Seconds of the steps, waiting included."""
        return self.wait_s + self.compute_s

    def rates(self) -> dict[str, float]:
        """``samples_per_s``, ``step_s`` and ``data_wait_frac`` (empty with no time)."""
        if self.steps == 0 or self.wall_s <= 0:
            return {}
        return {
            "samples_per_s": self.samples / self.wall_s,
            "step_s": self.wall_s / self.steps,
            "data_wait_frac": self.wait_s / self.wall_s,
        }


class StepClock:
    """Wait and compute time of each step, from batch start/end times and pauses."""

    def __init__(self) -> None:
        self._last_end: float | None = None
        self._start: float | None = None
        self._wait: float | None = None

    def batch_start(self, now: float) -> None:
        """A training batch starts at ``now`` (its wait ends)."""
        self._start = now
        self._wait = None if self._last_end is None else now - self._last_end

    def batch_end(self, now: float) -> tuple[float, float] | None:
        """``(wait_s, compute_s)`` of the step that just ended, or None when untimed."""
        self._last_end = now
        if self._start is None or self._wait is None:
            return None
        return self._wait, now - self._start

    def pause(self) -> None:
        """Something other than training ran (validation): the next step is not timed."""
        self._last_end = None


def format_duration(seconds: float) -> str:
    """``3m05s``, ``1h02m``, ``42s``; ``?`` when unknown."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def progress_line(
    step: int, total: float, loss: float | None, rates: dict[str, float], eta_s: float
) -> str:
    """``step 150/1000 | loss 2.314 | 412 samples/s | data wait 12% | ETA 3m05s``."""
    parts = [f"step {step}/{int(total)}" if math.isfinite(total) else f"step {step}"]
    if loss is not None:
        parts.append(f"loss {loss:.4g}")
    if rates:
        parts.append(f"{rates['samples_per_s']:.0f} samples/s")
        parts.append(f"data wait {100 * rates['data_wait_frac']:.0f}%")
    parts.append(f"ETA {format_duration(eta_s)}")
    return " | ".join(parts)


def batch_samples(batch: Any) -> int:
    """Rows in a training batch (its ``image`` tensor, else its first tensor)."""
    if isinstance(batch, dict):
        first = batch.get("image")
        if first is None:
            first = next((v for v in batch.values() if torch.is_tensor(v)), None)
        return int(first.shape[0]) if first is not None else 0
    return int(batch[0].shape[0]) if isinstance(batch, list | tuple) and batch else 0


class ThroughputLog(L.Callback):
    """Throughput metrics for the loggers and, off a terminal, text progress lines.

    ``monitor`` is the validation metric named in each validation line (beside
    ``val/mean_R@1``); ``clock`` is the time source (``time.perf_counter``; tests pass
    their own).
    """

    def __init__(
        self,
        options: ProgressOptions | None = None,
        monitor: str | None = None,
        is_terminal: bool | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.options = options or ProgressOptions()
        terminal = sys.stdout.isatty() if is_terminal is None else is_terminal
        self.print_lines = self.options.prints_lines(terminal)
        self.monitor = monitor
        self.clock = clock
        self._steps = StepClock()
        self._recent: deque[tuple[int, float, float]] = deque(maxlen=1)
        self._since_line = Window()
        self._line_step = 0
        self._line_time = 0.0
        self._fit_start: tuple[float, int] | None = None  # (time, step) of the first batch
        self._val_start = 0.0
        self._total = math.inf

    # ---------------------------------------------------------------- training
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._recent = deque(maxlen=max(1, int(trainer.log_every_n_steps)))
        self._total = float(trainer.estimated_stepping_batches)
        self._line_step, self._line_time = trainer.global_step, self.clock()

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        now = self.clock()
        if self._fit_start is None:
            self._fit_start = (now, trainer.global_step)
        self._steps.batch_start(now)

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        now = self.clock()
        timed = self._steps.batch_end(now)
        if timed is not None:
            samples = batch_samples(batch) * trainer.world_size
            self._recent.append((samples, *timed))
            self._since_line.add(samples, *timed)
            recent = Window()
            for entry in self._recent:
                recent.add(*entry)
            for name, value in recent.rates().items():
                pl_module.log(f"train/{name}", value, on_step=True, on_epoch=False, batch_size=1)
        if self.print_lines and trainer.is_global_zero and self._line_due(trainer, now):
            self._write_line(trainer, outputs, now)

    def _line_due(self, trainer: L.Trainer, now: float) -> bool:
        step, opts = trainer.global_step, self.options
        if step >= self._total:  # the last step
            return True
        by_steps = opts.every_steps > 0 and step - self._line_step >= opts.every_steps
        by_time = opts.every_s > 0 and now - self._line_time >= opts.every_s
        return by_steps or by_time

    def _write_line(self, trainer: L.Trainer, outputs: Any, now: float) -> None:
        step = trainer.global_step
        loss = _loss_value(outputs, trainer)
        eta = math.inf
        if self._fit_start is not None and step > self._fit_start[1]:
            per_step = (now - self._fit_start[0]) / (step - self._fit_start[1])
            eta = (self._total - step) * per_step
        log.info(progress_line(step, self._total, loss, self._since_line.rates(), eta))
        self._since_line = Window()
        self._line_step, self._line_time = step, now

    # ---------------------------------------------------------------- validation
    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._val_start = self.clock()
        self._steps.pause()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._steps.pause()
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        if not metrics:
            return
        shown = [k for k in dict.fromkeys(["val/mean_R@1", self.monitor or ""]) if k in metrics]
        values = ", ".join(f"{k} {metrics[k]:.4f}" for k in shown)
        took = format_duration(self.clock() - self._val_start)
        total = f"/{int(self._total)}" if math.isfinite(self._total) else ""
        log.info(
            f"validation at step {trainer.global_step}{total} ({took}): {values or 'done'} "
            f"({len(metrics)} val metrics logged)"
        )


def _loss_value(outputs: Any, trainer: L.Trainer) -> float | None:
    """This step's training loss (the step's output, else the last logged ``train/loss``)."""
    loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
    if loss is None:
        loss = trainer.callback_metrics.get("train/loss")
    if torch.is_tensor(loss):
        return float(loss.detach().float().item())
    return float(loss) if isinstance(loss, int | float) else None
