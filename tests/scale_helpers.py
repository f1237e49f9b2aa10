"""Shared settings of the scale-out tests that launch ``python -m vlexp.run`` as a command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# a real but minimal run: 4 steps of batch 16, one validation, no test pass, no pictures
TINY = [
    "debug=tiny_run", "data.source.num_train=128", "data.source.num_val=32",
    "data.source.num_test=32", "data.source.num_test_compositional=16", "data.batch_size=16",
    "trainer.max_steps=4", "trainer.val_check_interval=4", "test_after_fit=false",
    "viz.enabled=false",
]  # fmt: skip


def run_vlexp(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m vlexp.run <args>`` in ``cwd`` (outputs land there); output captured."""
    env = dict(
        os.environ,
        WANDB_MODE="offline",
        TOKENIZERS_PARALLELISM="false",
        HYDRA_FULL_ERROR="1",
        PYTHONPATH=str(REPO),
    )
    return subprocess.run(
        [sys.executable, "-m", "vlexp.cli.train", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def explain(proc: subprocess.CompletedProcess) -> str:
    """The tail of a finished command's output, for assertion messages."""
    return f"rc={proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-5000:]}"


def files_under(root: Path) -> list[str]:
    """Relative paths of every file under ``root`` (sorted), for assertion messages."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
