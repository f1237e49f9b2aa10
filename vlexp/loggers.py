"""Experiment loggers: a CSV log always, wandb (offline by default) when chosen."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger, Logger
from omegaconf import DictConfig, OmegaConf

from vlexp.sweep import run_group


def flat_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as one flat dict (``a.b.c`` keys) for experiment trackers."""
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        else:
            out[prefix[:-1]] = node

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return out


def build_loggers(cfg: DictConfig, run_dir: Path) -> list[Logger]:
    """CSV logger in ``run_dir`` plus the configured tracker."""
    loggers: list[Logger] = [CSVLogger(str(run_dir), name="csv", version="")]
    name = cfg.logger.name
    if name == "wandb":
        loggers.append(_wandb_logger(cfg, run_dir))
    return loggers


def _wandb_logger(cfg: DictConfig, run_dir: Path) -> Logger:
    from lightning.pytorch.loggers import WandbLogger

    mode = cfg.logger.get("mode") or os.environ.get("WANDB_MODE") or "offline"
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB_CONSOLE", "off")
    tags = [
        f"objective:{cfg.objective.name}",
        f"sampler:{cfg.sampler.name}",
        f"filter:{cfg.filter.name}",
        f"encoder:{cfg.encoder.name}",
        *cfg.get("tags", []),
    ]
    logger = WandbLogger(
        project=cfg.logger.project,
        entity=cfg.logger.get("entity"),
        group=run_group(cfg),
        save_dir=str(run_dir),
        mode=mode,
        tags=tags,
        config=flat_config(cfg),
        settings=_wandb_settings(),
    )
    return logger


def _wandb_settings() -> Any:
    import wandb

    # never block on the network or a login prompt
    return wandb.Settings(init_timeout=60, silent=True, console="off")
