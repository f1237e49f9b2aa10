"""Fast checks of the scale-out pieces: presets, tower options, resume rules, SLURM script,
failure handling, sweep table and plots (no training runs)."""

from __future__ import annotations

import copy
import json
import os
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.utils import setup_globals
from omegaconf import OmegaConf
from PIL import Image
from torch import nn

from experiments.collect import collect, to_markdown
from tests.conftest import CONF_DIR, compose_cfg
from vlexp.config import ConfigError, validate_config
from vlexp.encoders import ENCODERS
from vlexp.encoders.base import TwoTower
from vlexp.objectives.clip import ClipObjective
from vlexp.objectives.distributed import gather_features
from vlexp.train.model_opts import apply_model_opts, compile_towers, enable_grad_checkpointing
from vlexp.train.run import run_guarded
from vlexp.train.slurm import env_rank, latest_checkpoint, resume_checkpoint
from vlexp.train.sweep import run_group
from vlexp.train.viz import (
    Retrieved,
    retrieval_examples,
    schedule_columns,
    schedules_figure,
    similarity_heatmap,
)

TINY = {"name": "tiny", "embed_dim": 32, "image_size": 32, "patch_size": 8, "vision_width": 32,
        "vision_depth": 2, "vision_heads": 2, "text_width": 32, "text_depth": 2, "text_heads": 2,
        "context_length": 16}  # fmt: skip


# ------------------------------------------------------------------ presets
@pytest.mark.parametrize("preset", ["cpu", "gpu", "ddp", "ddp_sim", "multinode"])
def test_trainer_presets_compose_and_validate(preset, monkeypatch):
    for var in ("SLURM_JOB_NUM_NODES", "SLURM_NTASKS_PER_NODE", "SLURM_GPUS_ON_NODE"):
        monkeypatch.delenv(var, raising=False)
    cfg = compose_cfg([f"trainer={preset}"], output_dir="/tmp/unused")
    validate_config(cfg)
    t = cfg.trainer
    expected = {
        "cpu": ("cpu", 1, "auto", "32-true"),
        "gpu": ("gpu", 1, "auto", "bf16-mixed"),
        "ddp": ("gpu", -1, "ddp", "bf16-mixed"),
        "ddp_sim": ("cpu", 2, "ddp_spawn", "32-true"),
        "multinode": ("gpu", 1, "ddp", "bf16-mixed"),
    }[preset]
    assert (t.accelerator, t.devices, t.strategy, str(t.precision)) == expected
    assert t.num_nodes == 1


def test_multinode_reads_slurm_sizes(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", "3")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "8")
    cfg = compose_cfg(["trainer=multinode"], output_dir="/tmp/unused")
    assert (cfg.trainer.num_nodes, cfg.trainer.devices) == (3, 8)
    # explicit sizes (what a submitting shell without SLURM variables passes) win
    cfg = compose_cfg(
        ["trainer=multinode", "trainer.num_nodes=2", "trainer.devices=4"], output_dir="/tmp/unused"
    )
    assert (cfg.trainer.num_nodes, cfg.trainer.devices) == (2, 4)


def test_gradient_accumulation_is_refused_with_reason():
    cfg = compose_cfg(["trainer.accumulate_grad_batches=4"], output_dir="/tmp/unused")
    with pytest.raises(ConfigError, match="contrastive loss.*refuses"):
        validate_config(cfg)


def test_slurm_launcher_preset_writes_one_task_per_gpu(tmp_path, monkeypatch):
    """The sbatch script submitit would submit for 2 nodes x 4 GPUs (fake srun on PATH)."""
    import submitit
    from hydra.utils import instantiate
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    fake = tmp_path / "bin" / "srun"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    setup_globals()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="train", return_hydra_config=True, overrides=[
            "hydra/launcher=slurm", "trainer=multinode", "trainer.num_nodes=2",
            "trainer.devices=4", "hydra.launcher.partition=gpu"])  # fmt: skip
    params = dict(instantiate(cfg.hydra.launcher).params)
    # the translation BaseSubmititLauncher.launch applies before submitting
    executor = submitit.AutoExecutor(
        folder=tmp_path / "sub", cluster="slurm", slurm_max_num_timeout=params["max_num_timeout"]
    )
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(
        **{
            (k if k in base else f"slurm_{k}"): v
            for k, v in params.items()
            if k not in ("submitit_folder", "max_num_timeout")
        }
    )
    script = executor._executor._make_submission_file_text("python -m vlexp.run", "0")
    for flag in (
        "--nodes=2",
        "--ntasks-per-node=4",
        "--gpus-per-node=4",
        "--partition=gpu",
        "--signal=USR1@120",
    ):
        assert f"#SBATCH {flag}\n" in script, flag
    assert "USR2" not in script  # submitit's own signal is replaced: Lightning listens on USR1


# ------------------------------------------------------------------ tower options
def _loss_and_grads(model: TwoTower, seed: int = 0) -> tuple[float, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(6, 3, 32, 32, generator=g)
    tok = model.tokenize([f"a {c} shape number {i}" for i, c in enumerate("abcdef")])
    model.train()
    model.zero_grad()
    img = model.encode_image(images)
    txt = model.encode_text(tok["input_ids"], tok["attention_mask"])
    loss = ClipObjective()(gather_features(img, txt), model.logit_scale(), {}, 0.0).loss
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return float(loss), grads


def _count_block_calls(model: TwoTower, block: nn.Module) -> int:
    # a sub-module of a block (transformers checkpoints `forward`, so the block's own hooks
    # stay outside the checkpoint) and a pre-hook (non-reentrant recomputation may stop
    # before the module returns)
    calls = []
    handle = block.register_forward_pre_hook(lambda *_: calls.append(1))
    _loss_and_grads(model)
    handle.remove()
    return len(calls)


@pytest.mark.parametrize("encoder", ["tiny", "open_clip"])
def test_grad_checkpointing_recomputes_and_keeps_gradients(encoder):
    torch.manual_seed(0)
    if encoder == "tiny":
        model = ENCODERS.build(TINY)
        vis_block = model.image_tower.blocks[0].mlp
        txt_block = model.text_tower.model.encoder.layer[0].intermediate
    else:
        from vlexp.encoders.open_clip_tower import tiny_open_clip_config

        cfg = tiny_open_clip_config(
            image_size=32,
            vision_width=32,
            vision_layers=2,
            vision_head_width=16,
            text_width=32,
            text_layers=2,
            text_heads=2,
            context_length=16,
            embed_dim=32,
        )
        model = ENCODERS.build({"name": "open_clip", "model_cfg": cfg})
        vis_block = model.image_tower.model.transformer.resblocks[0].mlp
        txt_block = model.text_tower.text.transformer.resblocks[0].mlp
    ref = copy.deepcopy(model)
    loss_ref, grads_ref = _loss_and_grads(ref)
    assert _count_block_calls(model, vis_block) == 1 and _count_block_calls(model, txt_block) == 1

    found = enable_grad_checkpointing(model)
    assert found["image_tower"] and found["text_tower"]
    # recomputation in backward: each block's MLP runs twice per step
    assert _count_block_calls(model, vis_block) == 2
    assert _count_block_calls(model, txt_block) == 2
    loss, grads = _loss_and_grads(model)
    assert loss == pytest.approx(loss_ref, rel=1e-6)
    assert grads.keys() == grads_ref.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], grads_ref[name], rtol=1e-5, atol=1e-6, msg=name)


def test_grad_checkpointing_without_support_is_an_error():
    class Plain(nn.Module):
        def __init__(self, d: int) -> None:
            super().__init__()
            self.lin = nn.Linear(d, d)

        def forward(self, x, mask=None):
            return self.lin(x.flatten(1).float()[:, :8])

    model = TwoTower(Plain(8), Plain(8), 8, 8, tokenizer=None, embed_dim=4)
    with pytest.raises(ValueError, match="model_opts.grad_checkpointing=false"):
        enable_grad_checkpointing(model)
    apply_model_opts(model, {"grad_checkpointing": False, "compile": False})  # a no-op


def test_compile_keeps_parameter_names_and_outputs():
    torch.manual_seed(0)
    model = ENCODERS.build(TINY).eval()
    keys = list(model.state_dict())
    x = torch.randn(2, 3, 32, 32)
    before = model.encode_image(x)
    compile_towers(model, backend="eager")
    assert list(model.state_dict()) == keys  # checkpoints load with or without compile
    torch.testing.assert_close(model.encode_image(x), before)


# ------------------------------------------------------------------ resume rules
def _touch(path: Path, mtime: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"global_step": 0}, path)  # readable: resume skips unreadable files
    os.utime(path, (mtime, mtime))
    return path


def test_latest_checkpoint_picks_newest_of_last_and_hpc(tmp_path, monkeypatch):
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    assert latest_checkpoint(tmp_path) is None
    last = _touch(tmp_path / "checkpoints" / "last.ckpt", 1000)
    assert latest_checkpoint(tmp_path) == last
    hpc = _touch(tmp_path / "hpc_ckpt_1.ckpt", 2000)
    _touch(tmp_path / "hpc_ckpt_notanumber.ckpt", 3000)  # not Lightning's: ignored
    assert latest_checkpoint(tmp_path) == hpc
    os.utime(last, (4000, 4000))
    assert resume_checkpoint("auto", tmp_path) == str(last)
    assert resume_checkpoint(str(tmp_path), tmp_path / "other") == str(last)
    assert resume_checkpoint(None, tmp_path) is None  # a fresh run stays fresh


def test_requeued_slurm_job_resumes_without_asking(tmp_path, monkeypatch):
    last = _touch(tmp_path / "checkpoints" / "last.ckpt", 1000)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert resume_checkpoint(None, tmp_path) == str(last)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    assert resume_checkpoint(None, tmp_path) is None


def test_env_rank(monkeypatch):
    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert env_rank() == 0
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert env_rank() == 1
    monkeypatch.setenv("RANK", "0")  # the global rank wins over a local one
    monkeypatch.setenv("SLURM_PROCID", "0")
    assert env_rank() == 1  # ...unless it is 0 and LOCAL_RANK says otherwise
    monkeypatch.setenv("RANK", "5")
    assert env_rank() == 5


# ------------------------------------------------------------------ failures, groups
def test_failure_raises_in_single_run_and_returns_none_in_sweep(make_cfg, tmp_path):
    cfg = make_cfg(["optim.lr=5.0"])  # invalid: validate_config raises inside train()
    with pytest.raises(ConfigError, match="optim.lr"):
        run_guarded(cfg, multirun=False)
    error = tmp_path / "run" / "error.txt"
    assert "ConfigError" in error.read_text()
    error.unlink()
    assert run_guarded(cfg, multirun=True) is None
    assert "optim.lr=5.0" in error.read_text()


def test_run_group_order(make_cfg):
    cfg = make_cfg([])
    assert run_group(cfg) == "train"  # no Hydra app: task name
    cfg.logger.group = "ablation-1"
    assert run_group(cfg) == "ablation-1"


@pytest.mark.parametrize(
    ("mode", "group"), [("RUN", "diht"), ("MULTIRUN", "train/2026-01-01_00-00-00")]
)
def test_run_group_inside_hydra(mode, group):
    """In a sweep the group is the sweep directory; in a single run the experiment."""
    from hydra.core.hydra_config import HydraConfig

    setup_globals()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="train", return_hydra_config=True, overrides=[
            "experiment=diht", f"hydra.mode={mode}",
            "hydra.sweep.dir=multirun/train/2026-01-01_00-00-00"])  # fmt: skip
    try:
        HydraConfig.instance().set_config(cfg)
        assert run_group(cfg) == group
    finally:
        HydraConfig.instance().cfg = None


# ------------------------------------------------------------------ sweep table
def _job(root: Path, num: int, overrides: list[str], metrics: dict | None, error: str = "") -> None:
    job = root / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if metrics is not None:
        (job / "metrics.json").write_text(json.dumps(metrics))
    else:
        (job / "error.txt").write_text(f"Traceback ...\n{error}\n")


def test_collect_sweep_table(tmp_path, capsys):
    def m(obj: str, value: float, r1: float) -> dict:
        return {
            "objective": obj,
            "sampler": "random",
            "filter": "none",
            "seed": 0,
            "global_step": 20,
            "fit_seconds": 3.0,
            "monitor": "val/mean_R@1",
            "monitor_value": value,
            "val": {},
            "test": {"test/synthetic/i2t_R@1": r1, "test/synthetic/loss": 1.0},
        }

    _job(tmp_path, 0, ["objective=clip", "optim.lr=0.001"], m("clip", 0.25, 0.3))
    _job(tmp_path, 1, ["objective=hnnce", "optim.lr=0.001"], m("hnnce", 0.5, 0.6))
    _job(tmp_path, 2, ["objective=clip", "optim.lr=5.0"], None, "ConfigError: optim.lr=5.0")
    table = collect(tmp_path)
    assert list(table["job"]) == ["1", "0", "2"]  # best monitored value first, failures last
    assert list(table["status"]) == ["ok", "ok", "failed"]
    assert list(table["optim.lr"]) == ["0.001", "0.001", "5.0"]  # varied override column
    assert table.loc[0, "test/synthetic/i2t_R@1"] == 0.6
    assert "test/synthetic/loss" not in table  # only the default metrics
    assert "ConfigError" in table.loc[2, "error"]
    md = to_markdown(table).splitlines()
    assert md[0].startswith("| job | optim.lr | status |") and md[1].startswith("|---|")
    assert len(md) == 2 + 3
    from experiments.collect import main

    out_csv = tmp_path / "t.csv"
    assert main([str(tmp_path), "--csv", str(out_csv)]) == 0
    assert "| 1 | 0.001 | ok |" in capsys.readouterr().out
    assert len(pd.read_csv(out_csv)) == 3


# ------------------------------------------------------------------ plots
def test_plots_write_pngs(tmp_path):
    sim = np.eye(5) * 0.8 + 0.1
    p1 = similarity_heatmap(sim, tmp_path / "sim.png", [f"caption {i}" for i in range(5)], "t")
    img = np.zeros((16, 16, 3), dtype=np.uint8)
    hits = [[Retrieved("a red circle", 0.9, True), Retrieved("a blue square", 0.2, False)]]
    p2 = retrieval_examples([img], hits, tmp_path / "ret.png", "top-2", ["a red circle"])
    table = pd.DataFrame({
        "step": [9, 9, 19, 19], "epoch": [0, 0, 0, 0],
        "train/loss": [3.0, np.nan, 2.5, np.nan], "train/softalign_alpha": [0.1, np.nan, 0.2, np.nan],
        "sampler/hard_fraction": [0.0, np.nan, 0.5, np.nan], "lr-AdamW": [1e-3, np.nan, 5e-4, np.nan],
        "val/mean_R@1": [np.nan, 0.1, np.nan, 0.2], "train/never": [np.nan] * 4,
    })  # fmt: skip
    assert schedule_columns(table) == [
        "train/loss",
        "train/softalign_alpha",
        "sampler/hard_fraction",
        "lr-AdamW",
    ]
    table.to_csv(tmp_path / "metrics.csv", index=False)
    p3 = schedules_figure(tmp_path / "metrics.csv", tmp_path / "sched.png")
    for p in (p1, p2, p3):
        with Image.open(p) as im:
            assert im.format == "PNG" and im.width > 200 and im.height > 100
    pd.DataFrame({"step": [1], "val/x": [0.1]}).to_csv(tmp_path / "empty.csv", index=False)
    assert schedules_figure(tmp_path / "empty.csv", tmp_path / "none.png") is None
