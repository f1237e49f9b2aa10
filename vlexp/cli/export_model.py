"""``vlexp export-model ckpt=PATH out_dir=DIR [format=open_clip]``: hand a trained model
to the library its towers came from.

``format=open_clip`` (checkpoints of ``encoder=open_clip`` runs) writes the folder
``open_clip.create_model_and_transforms("local-dir:DIR")`` loads
(:mod:`vlexp.encoders.open_clip_export`). Every option is checked before the checkpoint
is read; a problem ends the command with one line naming the key (exit code 2). A Hydra
app (config ``conf/export_model.yaml``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from vlexp.config import ConfigError, exit_on_config_error

log = logging.getLogger("vlexp")

FORMATS = ("open_clip",)
WRITES = {"open_clip": ("open_clip_config.json", "open_clip_model.safetensors")}


def check_options(cfg: DictConfig) -> None:
    """One-line :class:`ConfigError` for a bad ``format`` or an ``out_dir`` holding an
    earlier export (without ``overwrite=true``)."""
    fmt = cfg.get("format")
    if fmt not in FORMATS:
        raise ConfigError(f"format={fmt}: expected one of {', '.join(FORMATS)}")
    if not isinstance(cfg.get("overwrite"), bool):
        raise ConfigError(f"overwrite={cfg.get('overwrite')}: expected true/false")
    out = Path(str(cfg.out_dir)).expanduser()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out_dir={out}: is a file; give a folder")
    existing = [n for n in WRITES[fmt] if (out / n).exists()]
    if existing and not cfg.overwrite:
        raise ConfigError(
            f"out_dir={out} already holds {', '.join(existing)}; pass overwrite=true to "
            "replace them, or another out_dir"
        )


def export_model(cfg: DictConfig) -> dict[str, Path]:
    """Load ``cfg.ckpt`` and write it in ``cfg.format``; the files written."""
    from vlexp.encoders.open_clip_export import export_open_clip
    from vlexp.train.checkpoints import load_model_and_config, resolve_checkpoint

    ckpt = resolve_checkpoint(str(cfg.ckpt))
    model, run_cfg = load_model_and_config(ckpt, cfg.get("config"), cfg.get("run_dir"))
    encoder = run_cfg.encoder.name
    if encoder != "open_clip":
        raise ConfigError(
            f"format=open_clip: {ckpt} was trained with encoder={encoder}; only "
            "encoder=open_clip checkpoints have an open_clip architecture to export to"
        )
    written = export_open_clip(model.eval(), Path(str(cfg.out_dir)).expanduser())
    for what, path in written.items():
        print(f"{what:>8}: {path}")
    print(
        "load it with:\n  open_clip.create_model_and_transforms("
        f"'local-dir:{written['config'].parent}')"
    )
    return written


def run(cfg: DictConfig) -> dict[str, Path] | Any:
    """Hydra task of ``vlexp export-model``."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        check_options(cfg)
        return export_model(cfg)
    except ConfigError as exc:
        exit_on_config_error(exc)
