"""``vlexp export-model ckpt=PATH out_dir=DIR [format=open_clip|hf]``: hand a trained
model to the library its towers came from.

``format=open_clip`` (checkpoints of ``encoder=open_clip`` runs) writes the folder
``open_clip.create_model_and_transforms("local-dir:DIR")`` loads
(:mod:`vlexp.encoders.open_clip_export`); ``format=hf`` (Hugging Face text towers:
``tiny``, ``pretrained_small``, ``hf_timm``) writes the text encoder as a folder
``transformers`` loads, plus the projections and the image tower's weights
(:mod:`vlexp.encoders.hf_export`). Every option is checked before the checkpoint
is read; a problem ends the command with one line naming the key (exit code 2). A Hydra
app (config ``conf/export_model.yaml``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from vlexp.config import ConfigError, missing_keys
from vlexp.errors import exit_on_user_error

log = logging.getLogger("vlexp")

FORMATS = ("open_clip", "hf")
HF_TEXT_ENCODERS = ("tiny", "pretrained_small", "hf_timm")
WRITES = {
    "open_clip": ("open_clip_config.json", "open_clip_model.safetensors"),
    "hf": ("text", "heads.safetensors", "image_tower.safetensors", "vlexp_towers.json"),
}


def check_options(cfg: DictConfig) -> None:
    """One-line :class:`ConfigError` for a bad ``format`` or an ``out_dir`` holding an
    earlier export (without ``overwrite=true``)."""
    missing = missing_keys(cfg)
    if missing:
        raise ConfigError(
            f"{missing[0]} is required: give it on the command line, {missing[0]}=..."
        )
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
    from vlexp.encoders.hf_export import export_hf
    from vlexp.encoders.open_clip_export import export_open_clip
    from vlexp.train.checkpoints import (
        checkpoint_config,
        load_model_and_config,
        resolve_checkpoint,
    )

    ckpt = resolve_checkpoint(str(cfg.ckpt))
    where = {"config": cfg.get("config"), "run_dir": cfg.get("run_dir")}
    encoder = checkpoint_config(ckpt, **where).encoder.name  # checked before building
    out = Path(str(cfg.out_dir)).expanduser()
    if cfg.format == "open_clip" and encoder != "open_clip":
        raise ConfigError(
            f"format=open_clip: {ckpt} was trained with encoder={encoder}; only "
            "encoder=open_clip checkpoints have an open_clip architecture to export to "
            "(format=hf writes Hugging Face text towers)"
        )
    if cfg.format == "hf" and encoder not in HF_TEXT_ENCODERS:
        raise ConfigError(
            f"format=hf: {ckpt} (encoder={encoder}) has no Hugging Face text tower "
            f"(encoders with one: {', '.join(HF_TEXT_ENCODERS)}); use format=open_clip "
            "for encoder=open_clip"
        )
    model, _ = load_model_and_config(ckpt, **where)
    if cfg.format == "open_clip":
        written = export_open_clip(model.eval(), out)
        how = f"open_clip.create_model_and_transforms('local-dir:{out}')"
    else:
        written = export_hf(model.eval(), out)
        how = f"transformers.AutoModel.from_pretrained('{written['text']}') (+ {written['heads']})"
    for what, path in written.items():
        print(f"{what:>8}: {path}")
    print(f"load it with:\n  {how}")
    return written


def run(cfg: DictConfig) -> dict[str, Path] | Any:
    """Hydra task of ``vlexp export-model``."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        check_options(cfg)
        return export_model(cfg)
    except ConfigError as exc:
        exit_on_user_error(exc)
