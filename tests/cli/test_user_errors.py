"""Every user error of a training command ends it before anything is built: one line on
stderr naming the key or file, exit code 2, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vlexp.cli.main import main

REPO = Path(__file__).resolve().parents[2]


def _tables(tmp: Path) -> dict[str, str]:
    wrong = tmp / "wrong_columns.csv"
    wrong.write_text("path,text\na.png,a red circle\n")
    return {"wrong": str(wrong)}


CASES = [
    (["objective=softalign", "objective.ramp_start=0.9", "objective.ramp_end=0.1"],
     "objective.ramp_start=0.9"),
    (["seed=-1"], "seed=-1"),
    (["data.source.image_size=8"], "data.source.image_size=8"),
    (["data.source.image_size=2000"], "data.source.image_size=2000"),
    (["+trainer.bogus=1"], "trainer.bogus"),
    (["resume=/nonexistent/run"], "resume=/nonexistent/run"),
    (["data=csv", "data.source.path={wrong}"], "data.source.image_col=filepath"),
    (["data=csv", "data.source.path=/etc/passwd"], "data.source.path=/etc/passwd"),
    (["trainer=ddp_sim", "data=webdataset", "data.source.urls=/nowhere/shard-0.tar",
      "trainer.max_steps=-1", "trainer.max_epochs=1"], "data.source.resampled=false"),
    (["+optim.weight_decy=0.5"], "optim.weight_decy"),
    (["+eval.monitr=x"], "eval.monitr"),
    (["+data.batchsize=3"], "data.batchsize"),
    (["+model_opts.compiled=true"], "model_opts.compiled"),
    (["+logger.projet=x", "logger=wandb"], "logger.projet"),
    (["+learning_rate=0.1"], "learning_rate"),
    (["viz.num_images=-1"], "viz.num_images=-1"),
    (["test_after_fit=maybe"], "test_after_fit=maybe"),
    (["sampler=tonics", "sampler.schedule.start=0.8", "sampler.schedule.end=0.2"],
     "sampler.schedule.start=0.8"),
    (["+trainer.callbacks=[]"], "trainer.callbacks"),
]  # fmt: skip


@pytest.mark.parametrize(("overrides", "key"), CASES, ids=[c[1] for c in CASES])
def test_refused_in_one_line_before_anything_is_built(
    overrides, key, tmp_path, monkeypatch, capsys
):
    import vlexp.train.run

    def must_not_run(*args, **kwargs):
        raise AssertionError("the run started although the config is invalid")

    monkeypatch.setattr(vlexp.train.run, "run_guarded", must_not_run)
    paths = _tables(tmp_path)
    args = [o.format(**paths) for o in overrides]
    with pytest.raises(SystemExit) as exit_info:
        main(["train", *args, f"hydra.run.dir={tmp_path / 'run'}"])
    assert exit_info.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    assert err[0].startswith("error: ") and key in err[0], err[0]
    assert "Traceback" not in err[0]
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize(
    ("overrides", "key"), [(["seed=-1"], "seed=-1"), (["+optim.weight_decy=0.5"], "weight_decy")]
)
def test_refusal_through_the_console_command(overrides, key, tmp_path):
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "vlexp.cli.main", "train", *overrides,
         f"hydra.run.dir={tmp_path}"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "HYDRA_FULL_ERROR": "0"},
    )  # fmt: skip
    seconds = time.perf_counter() - start
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and key in lines[0] and "Traceback" not in proc.stderr
    assert "lightning" not in proc.stderr
    print(f"refused in {seconds:.1f} s")


def test_tiny_run_composes_with_every_encoder():
    """debug=tiny_run shrinks the tiny towers only; other encoders keep their options."""
    from tests.conftest import compose_cfg
    from vlexp.config import validate_config

    for encoder in ("pretrained_small", "hf_timm", "open_clip"):
        cfg = compose_cfg(["debug=tiny_run", f"encoder={encoder}"], output_dir="/tmp/x")
        assert "vision_depth" not in cfg.encoder
        if encoder == "pretrained_small":
            validate_config(cfg)
    tiny = compose_cfg(["debug=tiny_run"], output_dir="/tmp/x")
    assert tiny.encoder.vision_depth == 1 and tiny.encoder.text_depth == 1
