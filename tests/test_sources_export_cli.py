"""`python -m vlexp.cli.export`: any configured source exported per split; the printed
training command reads the export back as the same pairs."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.conftest import compose_cfg
from vlexp.cli.export import main
from vlexp.data.sources import DATASETS
from vlexp.data.synthetic import build_synthetic

SIZES = [
    "data.source.num_train=24",
    "data.source.num_val=6",
    "data.source.num_test=5",
    "data.source.num_test_compositional=3",
    "data.source.image_size=16",
    "seed=2",
]


def _train_overrides(out: str) -> list[str]:
    line = out.strip().splitlines()[-1]
    return shlex.split(line)[3:]  # after "python -m vlexp.run"


@pytest.mark.parametrize("fmt", ["csv", "wds"])
def test_export_cli_round_trip(fmt, tmp_path, capsys):
    written = main(["--out", str(tmp_path / "x"), "--format", fmt, "--shard-size", "10", *SIZES])
    assert sorted(written) == [
        "test/compositional",
        "test/synthetic",
        "train",
        "val/synthetic",
    ]  # finegrained (distractors) skipped
    overrides = _train_overrides(capsys.readouterr().out)
    assert "data.source.image_size=16" in overrides
    if fmt == "wds":
        assert sorted(p.name for p in (tmp_path / "x" / "train").glob("*.tar")) == [
            "00000.tar",
            "00001.tar",
            "00002.tar",
        ]
    cfg = compose_cfg([*overrides, f"paths.cache_dir={tmp_path}/cache"])
    splits = DATASETS.build(OmegaConf.to_container(cfg.data.source, resolve=True), seed=0)
    ref = build_synthetic(
        seed=2, num_train=24, num_val=6, num_test=5, num_test_compositional=3, image_size=16
    )
    assert list(splits.train.captions) == list(ref["train"].captions)
    assert splits.val[0].captions == list(ref["val"].captions)
    assert splits.test[0].captions == list(ref["test"].captions)


def test_export_refuses_to_overwrite_and_module_entry_point(tmp_path):
    main(["--out", str(tmp_path), "--splits", "val", *SIZES])
    with pytest.raises(FileExistsError, match="overwrite"):
        main(["--out", str(tmp_path), "--splits", "val", *SIZES])
    main(["--out", str(tmp_path), "--splits", "val", "--overwrite", *SIZES])
    assert (tmp_path / "val" / "synthetic" / "pairs.csv").is_file()
    assert not (tmp_path / "train").exists()
    root = Path(__file__).resolve().parents[1]
    res = subprocess.run(
        [sys.executable, "-m", "vlexp.cli.export", "--help"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0 and "--format" in res.stdout
