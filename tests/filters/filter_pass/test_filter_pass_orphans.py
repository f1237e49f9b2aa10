"""Killing the filter pass with ``kill -9`` leaves none of its worker processes running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.filters.filter_pass.test_filter_pass import caption_shards

REPO = Path(__file__).resolve().parents[3]

# a pass whose units never finish: each worker records its pid, then waits
SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    import numpy as np
    from vlexp.filters.base import FILTERS, PairFilter

    @FILTERS.register("stuck_for_test")
    class Stuck(PairFilter):
        def decide(self, captions, images=None):
            with open(os.environ["PIDS_FILE"], "a") as f:
                f.write(f"{os.getpid()}\\n")
            time.sleep(600)
            return np.ones(len(captions), dtype=bool), [None] * len(captions)

    if __name__ == "__main__":
        from vlexp.filters.filter_pass import PassOptions, run_pass

        run_pass(PassOptions(input=sys.argv[1], output_dir=sys.argv[2], workers=2,
                             filter={"name": "stuck_for_test"}, progress=False))
    """
)


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_exit_when_the_pass_is_killed(tmp_path):
    inp = caption_shards(tmp_path / "in", n_shards=4, per_shard=2)
    script = tmp_path / "stuck_pass.py"
    script.write_text(SCRIPT)
    pids_file = tmp_path / "pids.txt"
    env = {**os.environ, "PYTHONPATH": str(REPO), "PIDS_FILE": str(pids_file)}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(inp), str(tmp_path / "out")],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    workers: list[int] = []
    try:
        deadline = time.time() + 120
        while time.time() < deadline and len(workers) < 2 and proc.poll() is None:
            time.sleep(0.1)
            if pids_file.is_file():
                workers = [int(x) for x in pids_file.read_text().split()]
        assert len(workers) == 2, "the pass did not start two workers"
        assert all(_alive(pid) for pid in workers)
        os.kill(proc.pid, signal.SIGKILL)  # only the parent: its workers must follow
        proc.wait(timeout=30)
        deadline = time.time() + 10
        while time.time() < deadline and any(_alive(pid) for pid in workers):
            time.sleep(0.1)
        assert not [pid for pid in workers if _alive(pid)], "orphaned workers are still running"
    finally:
        for pid in workers:  # the test's own children: never leave them behind
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
