"""Under DDP every rank's bad-sample counts reach rank 0 (none is lost to metrics.json)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.data.test_bad_samples_workers import _table
from tests.scale_helpers import explain, run_vlexp
from vlexp.train.datamodule import VLDataModule

WORLD = 2


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _counts(rank: int) -> dict:
    # rank r skipped r + 1 broken images of the 10 rows it read
    bad = rank + 1
    return {"train": {"read": {"seen": 10, "good": 10 - bad, "bad": bad,
                               "by_reason": {"broken_image": bad}}}}  # fmt: skip


def _rank(rank: int, port: int, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        fake = SimpleNamespace(bad_samples=_counts(rank))  # what the datamodule reports
        gathered = VLDataModule.bad_samples_per_rank(fake)  # type: ignore[arg-type]
        if rank == 0:
            queue.put(gathered)
    finally:
        dist.destroy_process_group()


def test_every_rank_reaches_rank_zero() -> None:
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    port = _port()
    procs = [ctx.Process(target=_rank, args=(r, port, queue)) for r in range(WORLD)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert all(p.exitcode == 0 for p in procs)
    gathered = queue.get()
    assert gathered == [_counts(0), _counts(1)]
    assert sum(g["train"]["read"]["bad"] for g in gathered) == 3  # 1 + 2: nothing lost


def test_one_process_has_no_per_rank_list() -> None:
    assert VLDataModule.bad_samples_per_rank(SimpleNamespace(bad_samples={})) is None  # type: ignore[arg-type]


@pytest.mark.slow
def test_ddp_run_reports_every_ranks_broken_images(tmp_path: Path) -> None:
    """2 ranks (``trainer.strategy=ddp`` over gloo) read disjoint halves of a 64-row CSV
    with 6 cut JPEGs: rank 0 alone saw only some of them; the per-rank list holds all 6."""
    bad_rows = {3, 10, 17, 40, 51, 60}
    table = _table(tmp_path, 64, bad_rows)
    proc = run_vlexp(
        [
            "trainer=ddp_sim",
            "trainer.strategy=ddp",
            "data=csv",
            f"data.source.path={table}",
            "data.num_workers=0",
            "data.batch_size=8",
            "encoder=tiny",
            "encoder.image_size=16",
            "trainer.max_steps=4",
            "trainer.val_check_interval=4",
            "test_after_fit=false",
            "viz.enabled=false",
            "hydra.run.dir=outputs/run",
        ],  # fmt: skip
        cwd=tmp_path,
    )
    assert proc.returncode == 0, explain(proc)
    metrics = json.loads((tmp_path / "outputs" / "run" / "metrics.json").read_text())
    ranks = metrics["bad_samples_per_rank"]
    assert len(ranks) == 2 and ranks[0] == metrics["bad_samples"]
    bad = [r["train"]["read"]["bad"] for r in ranks]
    assert sum(bad) == len(bad_rows) and min(bad) < len(bad_rows)  # split, none lost
    reasons = [r["train"]["read"]["by_reason"]["broken_image"] for r in ranks]
    assert reasons == bad
