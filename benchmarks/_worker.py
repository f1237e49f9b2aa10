"""What the memory benchmarks share: each measurement runs in a fresh process of the
same script (so one setting's peak memory never counts toward another's), which prints
its result as a JSON line last; its resident-memory counters come from /proc."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def run_worker(script: str, args: list[str]) -> dict[str, Any]:
    """Run ``python script *args`` (``OMP_NUM_THREADS`` 2 unless set) and return the JSON
    object on the last line of its stdout."""
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    cmd = [sys.executable, script, *args]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def rss_bytes(field: str) -> int:
    """A memory field of this process from /proc/self/status (``VmRSS``, ``VmHWM``), bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")
