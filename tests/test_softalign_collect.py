"""experiments/softalign_noise/collect.py on a fake sweep with hand-checked numbers."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "softalign_noise" / "collect.py"


@pytest.fixture(scope="module")
def collect():
    spec = importlib.util.spec_from_file_location("softalign_collect", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(root: Path, job: int, objective: str, noise: float, seed: int, r1: float) -> None:
    d = root / str(job)
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "config.yaml").write_text(
        yaml.safe_dump({"data": {"source": {"noisy_caption_frac": noise}}})
    )
    test = {
        "test/synthetic/i2t_R@1": r1,
        "test/synthetic/t2i_R@1": r1 + 0.02,
        "test/synthetic/i2t_R@5": 0.5,
        "test/synthetic/t2i_R@5": 0.5,
        "test/compositional/i2t_R@1": 0.1,
        "test/compositional/t2i_R@1": 0.1,
        "test/synthetic/zeroshot_top1": 0.3,
        "test/finegrained/finegrained_acc": 0.4,
    }
    (d / "metrics.json").write_text(
        json.dumps(
            {
                "objective": objective,
                "seed": seed,
                "global_step": 10,
                "fit_seconds": 1.0,
                "test": test,
            }
        )
    )


def test_tables_from_fake_sweep(tmp_path, collect) -> None:
    _run(tmp_path, 0, "clip", 0.4, 0, 0.10)
    _run(tmp_path, 1, "clip", 0.4, 1, 0.20)
    _run(tmp_path, 2, "softalign", 0.4, 0, 0.13)
    _run(tmp_path, 3, "softalign", 0.4, 1, 0.21)
    (tmp_path / "4").mkdir()  # an unfinished run is skipped
    rows = collect.collect(tmp_path)
    assert [(r["objective"], r["seed"]) for r in rows] == [
        ("clip", 0),
        ("clip", 1),
        ("softalign", 0),
        ("softalign", 1),
    ]
    # mean of i2t 10 and t2i 12 -> 11 percent
    assert rows[0]["R@1 (mean i2t/t2i)"] == pytest.approx(11.0)
    text = collect.markdown(rows)
    # clip R@1 over seeds: 11 and 21 -> mean 16, sample std 7.07
    assert "| 40% | clip | 2 | 16.00 ± 7.07 |" in text
    # paired differences: +3 and +1 -> mean +2
    assert "| 40% | 2 | +2.00 (+3.00, +1.00) |" in text
    assert collect.main([str(tmp_path), "--out", str(tmp_path / "t.md")]) == 0
    assert (tmp_path / "t.md").read_text() == text
