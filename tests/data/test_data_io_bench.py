"""The data-loading benchmark runs end to end on a tiny set (numbers are not checked)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


def test_benchmark_smoke(capsys):
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_data_loading.py"
    spec = importlib.util.spec_from_file_location("bench_data_loading", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = bench.main(
        [
            "--n",
            "40",
            "--size",
            "16",
            "--batch-size",
            "8",
            "--workers",
            "0",
            "--shard-size",
            "10",
            "--repeats",
            "1",
        ]
    )
    assert [r["reader"] for r in rows] == [
        "plain-files",
        "vlexp-csv",
        "vlexp-indexed",
        "vlexp-wds",
        "wds-library",
    ]
    assert all(r["samples_per_s"] > 0 for r in rows)
    assert "vs plain" in capsys.readouterr().out


@pytest.mark.slow
def test_loader_vs_open_clip_benchmark_smoke(capsys):
    pytest.importorskip("open_clip_train")
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_loader_vs_open_clip.py"
    spec = importlib.util.spec_from_file_location("bench_loader_vs_open_clip", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = ["--n", "40", "--size", "32", "--batch-size", "8", "--workers", "0"]
    rows = bench.main([*args, "--shard-size", "10", "--repeats", "1"])
    assert [r["loader"] for r in rows] == ["open_clip", "vlexp", "vlexp-pil"]
    assert all(r["samples_per_s"] > 0 for r in rows)
    assert "raw tar read" in capsys.readouterr().out
