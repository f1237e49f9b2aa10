"""``vlexp eval ckpt=PATH [eval=coco|flickr30k|imagenet_folder|default] [key=value ...]``.

Evaluates any checkpoint on the test sets of its run's data plus the extra sets of an
eval preset, with the module and report code training uses, so the table and
``metrics.json`` read like the ones written at the end of training (and the numbers of
the run's own test sets are the same). The config is ``conf/evaluate.yaml``; the
checkpoint and its run config are read by :mod:`vlexp.train.checkpoints`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from vlexp import run_options
from vlexp.cli import CONF_DIR
from vlexp.config import ConfigError
from vlexp.errors import exit_on_user_error

log = logging.getLogger("vlexp")


def run_config_for_eval(cfg: DictConfig, run_cfg: DictConfig) -> DictConfig:
    """The run's config with the chosen eval preset (if any; options a run of an older
    version lacks take ``conf/eval/default.yaml``'s values) and no training filter (the
    training pairs are not read to evaluate)."""
    run_cfg = OmegaConf.create(OmegaConf.to_container(run_cfg, resolve=False))
    chosen = cfg.eval if cfg.get("eval") is not None else run_cfg.get("eval")
    defaults = OmegaConf.load(Path(CONF_DIR) / "eval" / "default.yaml")
    with open_dict(run_cfg):
        run_cfg.eval = OmegaConf.to_container(OmegaConf.merge(defaults, chosen), resolve=True)
        run_cfg.filter = {"name": "none"}
        run_cfg.paths.output_dir = str(cfg.output_dir)
    errors = run_options.TOP["eval"].errors(OmegaConf.to_container(run_cfg.eval), "eval")
    if errors:
        raise ConfigError("Invalid configuration: " + "; ".join(e.strip() for e in errors))
    return run_cfg


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Load ``cfg.ckpt``, test it, print the table, write ``metrics.json``; the summary."""
    import lightning as L
    import torch

    from vlexp.objectives.base import Objective
    from vlexp.train.checkpoints import (
        checkpoint_config,
        checkpoint_step,
        load_model_and_config,
        read_checkpoint,
        resolve_checkpoint,
        stored_choices,
    )
    from vlexp.train.datamodule import VLDataModule
    from vlexp.train.module import VLModule, eval_options
    from vlexp.train.run import run_test, test_table, write_metrics

    ckpt = resolve_checkpoint(str(cfg.ckpt))
    config, run_dir = cfg.get("config"), cfg.get("run_dir")
    run_cfg = run_config_for_eval(cfg, checkpoint_config(ckpt, config, run_dir))  # checked first
    model, stored = load_model_and_config(ckpt, config, run_dir)
    torch.set_float32_matmul_precision("high")
    L.seed_everything(int(run_cfg.seed), workers=True, verbose=False)
    log.info("seed: %d", int(run_cfg.seed))
    module = VLModule(model, Objective(), **eval_options(run_cfg.eval))
    datamodule = VLDataModule.for_model(
        run_cfg, model, extra_eval_sets=run_cfg.eval.get("extra_sets")
    )
    trainer = L.Trainer(
        accelerator=str(cfg.accelerator),
        devices=1,
        precision=run_cfg.trainer.get("precision", "32-true"),
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        default_root_dir=str(cfg.output_dir),
    )
    datamodule.setup("test")
    test_metrics = run_test(trainer, module, datamodule)
    choices = stored_choices(read_checkpoint(ckpt))
    rows = test_table(run_cfg, test_metrics, datamodule.test_sets, tuple(run_cfg.eval.ks), choices)
    summary = {
        "ckpt": str(ckpt),
        "experiment": choices.get("experiment"),
        "objective": run_cfg.objective.name,
        "sampler": run_cfg.sampler.name,
        "filter": stored.filter.name,
        "encoder": run_cfg.encoder.name,
        "seed": int(run_cfg.seed),
        "global_step": checkpoint_step(ckpt),
        "retrieval_ties": run_cfg.eval.retrieval_ties,
        "retrieval_identical_captions": run_cfg.eval.retrieval_identical_captions,
        "test": test_metrics,
        "test_table": rows,
        "bad_samples": datamodule.bad_samples,
    }
    write_metrics(Path(cfg.output_dir), summary)
    return summary


def run(cfg: DictConfig) -> dict[str, Any]:
    """Hydra task of ``vlexp eval``; a config error ends it in one line (exit code 2)."""
    try:
        return evaluate(cfg)
    except ConfigError as exc:
        exit_on_user_error(exc)
