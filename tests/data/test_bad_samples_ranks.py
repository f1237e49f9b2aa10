"""Under DDP, spawned or not, every rank's bad-sample counts reach metrics.json (none lost)."""

from __future__ import annotations

import io
import json
import os
import socket
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.data.test_bad_samples_workers import _table
from tests.scale_helpers import explain, run_vlexp
from vlexp.data.bad_samples import BAD_SAMPLES_KEY, BadSampleCounter, BadSampleTally
from vlexp.train.datamodule import RANK_READS_KEY, VLDataModule

WORLD = 2


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tally(rank: int) -> BadSampleTally:
    """Rank ``rank`` read 10 rows of its own and skipped ``rank + 1`` broken images."""
    tally = BadSampleTally()
    reader = SimpleNamespace(bad=BadSampleCounter(1.0, name="train", num_rows=40))
    tally.track("train", reader)
    rows = range(10 * rank, 10 * rank + 10)
    for r in rows:
        if r - 10 * rank <= rank:
            reader.bad.add("broken_image", f"row {r}", row=r)
        else:
            reader.bad.ok(row=r)
    tally.absorb({BAD_SAMPLES_KEY: [reader.bad.take()]})
    return tally


def _expected(rank: int) -> dict:
    bad = rank + 1  # counted by hand from _tally
    return {"train": {"seen": 10, "good": 10 - bad, "bad": bad, "bad_fraction": bad / 10,
                      "by_reason": {"broken_image": bad}, "notes": {}}}  # fmt: skip


class _Shares:
    """The part of VLDataModule that shares the ranks' counts, on a given tally."""

    share_rank_reads = VLDataModule.share_rank_reads
    _merge_rank_reads = VLDataModule._merge_rank_reads

    def __init__(self, tally: BadSampleTally) -> None:
        self.tally, self.trainer, self._rank_reads = tally, None, None


def _rank(rank: int, port: int, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        shares = _Shares(_tally(rank))
        shares.share_rank_reads()  # what every rank's teardown does
        queue.put((rank, shares._rank_reads))
    finally:
        dist.destroy_process_group()


def test_every_rank_gets_every_ranks_counts() -> None:
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    port = _port()
    procs = [ctx.Process(target=_rank, args=(r, port, queue)) for r in range(WORLD)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert all(p.exitcode == 0 for p in procs)
    got = dict(queue.get() for _ in range(WORLD))
    assert got[0] == got[1] == [_expected(0), _expected(1)]
    assert sum(g["train"]["bad"] for g in got[0]) == 3  # 1 + 2: nothing lost


def test_spawned_counts_reach_the_launching_process() -> None:
    """Rank 0 of a spawn launcher leaves the counts in ``callback_metrics``, which
    Lightning's launcher sends back as ``torch.save`` bytes loaded with weights_only."""
    sent = _Shares(BadSampleTally())
    sent._merge_rank_reads([{"train": _expected(r)["train"]} for r in range(WORLD)])
    blob = json.dumps(sent._rank_reads).encode()
    metrics = {RANK_READS_KEY: torch.frombuffer(bytearray(blob), dtype=torch.uint8), "val/x": 1.0}
    buf = io.BytesIO()
    torch.save(metrics, buf)
    received = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)
    trainer = SimpleNamespace(callback_metrics=received)
    main = _Shares(BadSampleTally())
    VLDataModule.collect_rank_reads(main, trainer)  # type: ignore[arg-type]
    assert main._rank_reads == [{"train": _expected(r)["train"]} for r in range(WORLD)]
    assert RANK_READS_KEY not in trainer.callback_metrics  # the metrics are metrics again
    # a later spawned test run adds the test sets' counts; the fit's stay
    main._merge_rank_reads([{"test/x": {"bad": r}} for r in range(WORLD)])
    assert main._rank_reads[1] == {"train": _expected(1)["train"], "test/x": {"bad": 1}}


def test_one_process_has_no_per_rank_list() -> None:
    assert VLDataModule.bad_samples_per_rank(SimpleNamespace(_rank_reads=None)) is None  # type: ignore[arg-type]


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


@pytest.mark.slow
def test_ddp_spawn_run_reports_true_counts_per_rank(tmp_path: Path) -> None:
    """``trainer=ddp_sim`` (ddp_spawn): 68 rows, 4 without a file (the start-up check,
    run by every rank) and 10 cut JPEGs; 4 steps of 2 x 8 read each of the 64 kept rows
    once (plus a substitute per cut JPEG). The bad rows are never 25 apart (the substitute stride mod 64), so each is
    looked at by one rank only: the true total is 4 + 10."""
    broken = {1, 5, 9, 14, 20, 33, 41, 47, 52, 60}
    table = _table(tmp_path, 64, broken)
    df = pd.read_csv(table)
    gone = pd.DataFrame({"filepath": [f"gone{i}.jpg" for i in range(4)], "caption": list("abcd")})
    pd.concat([df, gone]).to_csv(table, index=False)
    proc = run_vlexp(
        [
            "trainer=ddp_sim",
            "data=csv",
            f"data.source.path={table}",
            "data.source.max_bad_fraction=0.5",
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
        timeout=600,  # two spawned ranks: minutes on a busy 2-core machine
    )
    assert proc.returncode == 0, explain(proc)
    metrics = json.loads((tmp_path / "outputs" / "run" / "metrics.json").read_text())
    ranks = [r["train"]["read"] for r in metrics["bad_samples_per_rank"]]
    assert len(ranks) == 2 and metrics["bad_samples"]["train"]["read"] == ranks[0]
    assert [r["dropped_at_start"] for r in ranks] == [4, 4]
    assert [r["by_reason"]["missing_image"] for r in ranks] == [4, 4]
    read_bad = [r["by_reason"]["broken_image"] for r in ranks]
    assert sum(read_bad) == len(broken) and min(read_bad) > 0  # split between ranks
    assert 4 + sum(r["bad"] - r["dropped_at_start"] for r in ranks) == 14
    looked_at = [r["seen"] - r["dropped_at_start"] for r in ranks]  # own rows + substitutes
    assert min(looked_at) >= 32 and sum(looked_at) <= 64 + len(broken)
