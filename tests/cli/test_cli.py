"""The ``vlexp`` command: subcommands, light start-up, shell completion, self-describing
checkpoints and ``vlexp eval``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from tests.conftest import CONF_DIR, compose_cfg
from vlexp.cli.main import COMMANDS, main
from vlexp.config import ConfigError

REPO = Path(__file__).resolve().parents[2]


def _run_cli(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -X importtime -m vlexp.cli.main <args>`` from the repository root."""
    return subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "vlexp.cli.main", *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _imported(stderr: str) -> set[str]:
    """Top-level module names in a ``-X importtime`` report."""
    return {line.rsplit("|", 1)[-1].strip() for line in stderr.splitlines() if "|" in line}


def test_cfg_job_prints_the_config_without_importing_torch():
    res = _run_cli(["train", "--cfg", "job", "objective=hnnce", "debug=tiny_run"])
    assert res.returncode == 0, res.stderr[-2000:]
    cfg = OmegaConf.create(res.stdout)
    assert cfg.objective.name == "hnnce" and cfg.trainer.max_steps == 20
    mods = _imported(res.stderr)
    assert "hydra" in mods  # the report is read correctly
    assert not {"torch", "lightning", "vlexp.cli.train"} & mods


def test_help_lists_groups_without_importing_torch():
    res = _run_cli(["eval", "--help"])
    assert res.returncode == 0, res.stderr[-2000:]
    assert "eval: coco, default, flickr30k, imagenet_folder" in res.stdout
    assert "torch" not in _imported(res.stderr)


@pytest.mark.parametrize(
    ("args", "key", "value"),
    [
        (["export", "--cfg", "job", "out_dir=o", "format=wds"], "format", "wds"),
        (["teacher", "train-synthetic", "out=t.pt", "--cfg", "job"], "action", "train-synthetic"),
        (["export-model", "ckpt=r.ckpt", "out_dir=o", "--cfg", "job"], "format", "open_clip"),
    ],
)
def test_export_and_teacher_are_hydra_apps_without_torch(args, key, value):
    res = _run_cli(args)
    assert res.returncode == 0, res.stderr[-2000:]
    assert OmegaConf.create(res.stdout)[key] == value
    modules = {"vlexp.cli.export", "vlexp.cli.teacher", "vlexp.cli.export_model"}
    assert not {"torch", *modules} & _imported(res.stderr)


def test_shell_completion_answers():
    res = _run_cli(["-sc", "query=bash"], env={"COMP_LINE": "vlexp train objective=hn"})
    assert res.returncode == 0, res.stderr[-2000:]
    assert "objective=hnnce" in res.stdout.split()
    res = _run_cli(["-sc", "query=bash"], env={"COMP_LINE": "vlexp e"})
    assert sorted(res.stdout.split()) == ["eval", "export", "export-model"]
    res = _run_cli(["train", "-sc", "install=bash"])
    assert res.returncode == 0 and "complete -o nospace" in res.stdout
    assert "hydra_bash_completion" in res.stdout


def test_every_entry_point_is_a_subcommand():
    names = {"train", "eval", "filter", "tag", "fewshot", "export", "export-model", "teacher"}
    assert names <= set(COMMANDS)
    for name, command in COMMANDS.items():
        assert callable(command.load()), name
        if command.config is not None:
            assert (Path(CONF_DIR) / f"{command.config}.yaml").is_file(), name


def test_unknown_command_says_which_exist():
    with pytest.raises(SystemExit, match="unknown command 'trian'; one of: train, eval"):
        main(["trian"])


# --------------------------------------------------------------- checkpoints and eval
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A 12-step run on the synthetic data (its test metrics in metrics.json)."""
    from vlexp.train.run import train

    run = tmp_path_factory.mktemp("cli") / "run"
    cfg = compose_cfg(
        ["debug=tiny_run", "trainer.max_steps=12", "viz.enabled=false"], output_dir=run
    )
    train(cfg)
    return run


def _eval_cli(monkeypatch, out: Path, *overrides: str) -> dict:
    """``vlexp eval`` in this process; the metrics.json it wrote."""
    monkeypatch.setattr(sys, "argv", ["vlexp"])
    main(["eval", *overrides, f"hydra.run.dir={out}"])
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.slow
def test_checkpoint_carries_its_resolved_config(tiny_run):
    blob = torch.load(tiny_run / "checkpoints" / "last.ckpt", weights_only=True)
    stored = blob["hyper_parameters"]["config"]
    yaml_cfg = OmegaConf.to_container(
        compose_cfg(["debug=tiny_run", "trainer.max_steps=12", "viz.enabled=false"], tiny_run),
        resolve=True,
    )
    assert stored == yaml_cfg
    assert stored["trainer"]["max_steps"] == 12 and stored["paths"]["output_dir"] == str(tiny_run)


@pytest.mark.slow
def test_eval_reproduces_the_runs_test_metrics(tiny_run, tmp_path, monkeypatch):
    trained = json.loads((tiny_run / "metrics.json").read_text())
    got = _eval_cli(monkeypatch, tmp_path / "eval", f"ckpt={tiny_run}/checkpoints/last.ckpt")
    assert got["test"] == trained["test"]  # exactly: same weights, sets and code
    assert got["test_table"] == trained["test_table"]
    assert got["global_step"] == trained["global_step"] == 12


@pytest.mark.slow
def test_eval_adds_an_eval_preset(tiny_run, tmp_path, monkeypatch):
    root = tmp_path / "inet"
    rng = np.random.default_rng(0)
    for c, wnid in enumerate(["cat", "dog", "fish"]):
        for j in range(3):
            (root / wnid).mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / wnid / f"{c}_{j}.png")
    trained = json.loads((tiny_run / "metrics.json").read_text())
    got = _eval_cli(
        monkeypatch,
        tmp_path / "eval",
        f"ckpt={tiny_run}",  # a run directory: its best.ckpt
        "eval=imagenet_folder",
        f"eval.extra_sets.imagenet.root={root}",
    )
    assert 0.0 <= got["test"]["test/imagenet/zeroshot_top1"] <= 1.0
    assert set(trained["test"]) < set(got["test"])


def test_fewshot_is_a_hydra_app():
    res = _run_cli(["fewshot", "--cfg", "job", "ckpt=x.ckpt", "ks=[1,4]", "protocol=heldout"])
    assert res.returncode == 0, res.stderr[-2000:]
    cfg = OmegaConf.create(res.stdout)
    assert cfg.ks == [1, 4] and cfg.protocol == "heldout" and cfg.seeds == [0, 1, 2]
    assert "torch" not in _imported(res.stderr)


@pytest.mark.slow
def test_fewshot_runs_from_the_checkpoint_alone(tiny_run, tmp_path, monkeypatch):
    out = tmp_path / "fewshot.json"
    monkeypatch.setattr(sys, "argv", ["vlexp"])
    ckpt = tiny_run / "checkpoints" / "last.ckpt"
    args = [f"ckpt={ckpt}", "ks=[1]", "seeds=[0]", "steps=5", f"out={out}"]
    main(["fewshot", *args, f"hydra.run.dir={tmp_path / 'job'}"])
    res = json.loads(out.read_text())
    assert res["ks"] == [1] and res["ckpt"] == str(ckpt)
    assert 0.0 <= res["zeroshot"] <= 1.0


@pytest.mark.slow
def test_checkpoint_without_config_names_the_fix(tiny_run, tmp_path):
    from vlexp.train.checkpoints import checkpoint_config, load_two_tower

    blob = torch.load(tiny_run / "checkpoints" / "last.ckpt", weights_only=True)
    del blob["hyper_parameters"]
    bare = tmp_path / "elsewhere" / "checkpoints" / "old.ckpt"
    bare.parent.mkdir(parents=True)
    torch.save(blob, bare)
    with pytest.raises(ConfigError) as err:
        checkpoint_config(bare)
    message = str(err.value)
    assert "\n" not in message and "run_dir=" in message and "config=" in message
    # with the run directory (its .hydra/config.yaml) the same model comes back
    hydra_dir = tmp_path / "rundir" / ".hydra"
    hydra_dir.mkdir(parents=True)
    stored = torch.load(tiny_run / "checkpoints" / "last.ckpt", weights_only=True)
    OmegaConf.save(
        OmegaConf.create(stored["hyper_parameters"]["config"]), hydra_dir / "config.yaml"
    )
    model = load_two_tower(bare, run_dir=tmp_path / "rundir")
    for key, value in model.state_dict().items():
        assert torch.equal(value, blob["state_dict"][f"model.{key}"]), key


def test_console_script_is_declared():
    import tomllib

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"vlexp": "vlexp.cli.main:main"}


def test_ddp_ranks_rerun_the_same_command(monkeypatch):
    """Lightning re-runs ``python -m <__main__ module> argv[1:]`` for ranks 1..: from the
    console script that must be the train command with the user's overrides."""
    import types

    from lightning.fabric.strategies.launchers.subprocess_script import _basic_subprocess_cmd

    from vlexp.cli import main as cli_main

    fake = types.ModuleType("__main__")
    fake.__spec__ = None  # a console script
    monkeypatch.setitem(sys.modules, "__main__", fake)
    monkeypatch.setattr(sys, "argv", ["/venv/bin/vlexp", "train", "trainer=ddp"])
    cli_main._prepare_argv("train", COMMANDS["train"], ["trainer=ddp", "seed=3"])
    assert _basic_subprocess_cmd()[1:] == ["-m", "vlexp.cli.train", "trainer=ddp", "seed=3"]
