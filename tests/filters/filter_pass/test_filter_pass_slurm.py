"""The pass as separate processes: a submitit job array then ``merge``, and a real kill.

Both start fresh Python processes that load spaCy, so they are marked slow.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.filters.filter_pass.test_filter_pass import (
    CAPTIONS_ONLY,
    KNOWN,
    caption_shards,
    checksums,
    needs_spacy,
    needs_tesseract,
    opts,
    render,
    write_shard,
)
from vlexp.filters.filter_pass import run_pass, without_timing

REPO = Path(__file__).resolve().parents[3]


def _cli(args: list[str], cwd: Path, **kw) -> subprocess.Popen:
    env = {**os.environ, "HYDRA_FULL_ERROR": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "vlexp.cli.filter", *args],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw,
    )  # fmt: skip


@pytest.mark.slow
@needs_spacy
def test_submitit_local_array_of_two_jobs_then_merge_equals_one_run(tmp_path):
    inp = caption_shards(tmp_path / "in", n_shards=5, per_shard=6)
    before = checksums(inp)
    out = tmp_path / "out"
    proc = _cli(
        ["-m", "hydra/launcher=submitit_local", f"input={inp}", f"output_dir={out}",
         "filter.text_spotting=false", "workers=1", "progress=false", "array_count=2",
         "array_index=0,1", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        cwd=tmp_path,
    )  # fmt: skip
    log = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, log
    # one submitit job per array index, each with its own log folder
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.name.isdigit()) == ["0", "1"]
    unit_reports = sorted(p.name for p in (out / "_units").iterdir())
    assert unit_reports == [f"{i:05d}.json" for i in range(5)]

    merge = _cli(["merge", f"output_dir={out}"], cwd=tmp_path)
    log = merge.communicate(timeout=120)[0]
    assert merge.returncode == 0, log
    merged = json.loads((out / "report.json").read_text())

    single = run_pass(opts(inp, tmp_path / "single", CAPTIONS_ONLY))["report"]
    assert without_timing(merged) == without_timing(single)
    assert merged["total"] == 30
    for i in range(5):
        name = f"{i:05d}.tar"
        assert (out / name).read_bytes() == (tmp_path / "single" / name).read_bytes()
    assert checksums(inp) == before


@pytest.mark.slow
@needs_spacy
@needs_tesseract
def test_killed_run_resumes_without_redoing_finished_units(tmp_path):
    inp = tmp_path / "in"
    for s in range(8):  # 8 shards of 3 OCR'd pairs each: slow enough to kill mid-way
        lo = 3 * (s % 2)
        samples = [
            {"key": f"{s:05d}{i:04d}", "caption": c, "image": render(t, seed=i)}
            for i, (_, c, t, _) in enumerate(KNOWN[lo : lo + 3])
        ]
        write_shard(inp / f"{s:05d}.tar", samples)
    out = tmp_path / "out"
    proc = _cli(
        [f"input={inp}", f"output_dir={out}", "workers=1", "progress=false",
         "filter.complexity=false", "filter.action=false"],
        cwd=tmp_path, start_new_session=True,
    )  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (out / "_units").is_dir() and len(list((out / "_units").glob("*.json"))) >= 2:
            break
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the session this test started: like a preempted job
    proc.communicate(timeout=30)
    done = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in (out / "_units").glob("*.json")}
    assert 2 <= len(done) < 8, "the run finished before it could be killed; make units slower"
    assert not (out / "report.json").exists()

    summary = run_pass(opts(inp, out, {"name": "cat", "complexity": False, "action": False}))
    assert summary["skipped_done"] == len(done) and summary["ran"] == 8 - len(done)
    for name, (data, mtime) in done.items():
        p = out / "_units" / name
        assert p.read_bytes() == data and p.stat().st_mtime_ns == mtime
    assert not list(out.rglob("*.tmp*"))
    report = summary["report"]
    assert report["units"] == 8 and report["total"] == 24
    # per pair of shards: "a man riding a horse" and "sale" are spelled out in the image
    assert report["dropped"] == {"text_spotting": 8} and report["kept"] == 16
