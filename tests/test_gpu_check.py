"""benchmarks/gpu_check.sh: every section runs (on CPU, small) and lands in the report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_check  # noqa: E402


def test_unknown_section_is_refused(capsys):
    with pytest.raises(SystemExit):
        gpu_check.main(["--device", "cpu", "--sections", "env,warp_drive"])
    assert "unknown sections ['warp_drive']" in capsys.readouterr().err


def test_failed_section_is_reported_not_hidden():
    lines = gpu_check.render("ddp", {"error": "RuntimeError: NCCL error", "seconds": 3.0})
    assert lines == ["FAILED after 3 s: RuntimeError: NCCL error"]
    table = gpu_check.render(
        "precisions",
        {
            "32-true": {
                "status": "ok",
                "samples_per_s": 1234.5,
                "last_loss": 2.5,
                "peak_mem_gib": None,
            }
        }
        | {"seconds": 1.0},
    )
    assert "| 32-true | ok | 1,234 | 2.5 | n/a |" in table
    assert "| 16-true | missing |  |  |  |" in table  # a precision that never reported


@pytest.mark.slow
def test_quick_cpu_check_prints_and_writes_every_section(tmp_path):
    out = tmp_path / "check.md"
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--device", "cpu", "--quick"]
        + ["--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = out.read_text()
    for i, name in enumerate(gpu_check.SECTIONS, 1):
        header = f"## {i}. {name}: {gpu_check.TITLES[name]}"
        assert header in proc.stdout and header in report, header
    assert "Result: all sections ok" in report
    results = json.loads(out.with_suffix(".json").read_text())
    assert set(results) == set(gpu_check.SECTIONS)
    assert results["ddp"]["backend"] == "gloo" and results["ddp"]["world_size"] == 1
    oc = results["open_clip"]
    assert len(oc["ratio_per_round"]) == 1 and oc["ratio_median"] > 0
    assert all(results["precisions"][p]["status"] == "ok" for p in gpu_check.PRECISIONS)
    assert results["compile"]["on"]["finite"] and results["compile"]["off"]["finite"]
    mem = results["loss_memory"]
    assert mem["rows"] * mem["world"] == mem["cols"] == mem["global_batch"]
    assert results["teacher"]["fp32_images_per_s"] > 0
