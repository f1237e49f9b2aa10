"""`vlexp export`: any configured source exported per split; the printed training command
reads the export back as the same pairs."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.conftest import compose_cfg
from vlexp.cli import CONF_DIR
from vlexp.cli.export import run
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


def main(overrides: list[str]) -> dict[str, Path]:
    """``vlexp export <overrides>`` in this process (config composed as the app does)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return run(compose(config_name="export", overrides=overrides))


def _train_overrides(out: str) -> list[str]:
    line = out.strip().splitlines()[-1]
    return shlex.split(line)[3:]  # after "python -m vlexp.run"


@pytest.mark.parametrize("fmt", ["csv", "wds"])
def test_export_cli_round_trip(fmt, tmp_path, capsys):
    written = main([f"out_dir={tmp_path / 'x'}", f"format={fmt}", "shard_size=10", *SIZES])
    assert sorted(written) == [
        "test/compositional",
        "test/single",
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
    main([f"out_dir={tmp_path}", "splits=[val]", *SIZES])
    with pytest.raises(FileExistsError, match="overwrite"):
        main([f"out_dir={tmp_path}", "splits=[val]", *SIZES])
    main([f"out_dir={tmp_path}", "splits=[val]", "overwrite=true", *SIZES])
    assert (tmp_path / "val" / "synthetic" / "pairs.csv").is_file()
    assert not (tmp_path / "train").exists()
    root = Path(__file__).resolve().parents[2]
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "vlexp.cli.export",
            "--cfg",
            "job",
            "out_dir=o",
            "format=webdataset",
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    cfg = OmegaConf.create(res.stdout)
    assert cfg.format == "webdataset" and cfg.data.source.name == "synthetic"


def test_vlexp_export_command_and_format_alias(tmp_path, monkeypatch, capsys):
    from vlexp.cli.main import main as vlexp

    monkeypatch.setattr(sys, "argv", ["vlexp"])
    out = tmp_path / "o"
    vlexp(["export", f"out_dir={out}", "format=webdataset", "splits=[test]", *SIZES,
           "shard_size=2", f"hydra.run.dir={tmp_path}/run"])  # fmt: skip
    shards = sorted(p.name for p in (out / "test" / "synthetic").glob("*.tar"))
    assert shards == ["00000.tar", "00001.tar", "00002.tar"]  # 5 pairs, 2 per shard
    assert "test/synthetic" in capsys.readouterr().out
    with pytest.raises(ValueError, match="format=zip is not one of"):
        main([f"out_dir={out}", "format=zip", *SIZES])
    with pytest.raises(ValueError, match="image_format=gif is not one of"):
        main([f"out_dir={out}", "image_format=gif", *SIZES])
