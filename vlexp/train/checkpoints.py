"""Loading vlexp checkpoints: the one place that reads a ``.ckpt`` back into a model.

A checkpoint written by training is self-describing: ``ckpt["hyper_parameters"]["config"]``
holds the run's resolved config as plain dicts, lists and scalars (so the file still loads
with ``torch.load(weights_only=True)``). The model is rebuilt from that config's
``encoder`` section and its ``model.*`` weights are loaded strictly. The config is
taken from, in order: an explicit ``config=`` YAML, ``run_dir=``'s ``.hydra/config.yaml``,
the checkpoint itself, the ``.hydra/config.yaml`` of the run directory holding it. Every
file is read without executing code from it (:func:`vlexp.io.load_torch_file`).
"""

from __future__ import annotations

import copy
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf

from vlexp.config import ConfigError
from vlexp.io import UnreadableFileError, load_torch_file
from vlexp.notices import LoadCounts, loaded_weights

HYPER_KEY = "hyper_parameters"  # Lightning's key; vlexp's module itself has no hparams
CONFIG_KEY = "config"
CHOICES_KEY = "choices"


def resolve_checkpoint(pretrained: str | os.PathLike) -> Path:
    """A ``.ckpt`` path, or a run directory (its ``checkpoints/best.ckpt``, else ``last.ckpt``)."""
    p = Path(pretrained).expanduser()
    if p.is_file():
        return p
    if p.is_dir():
        for name in ("best.ckpt", "last.ckpt"):
            if (p / "checkpoints" / name).is_file():
                return p / "checkpoints" / name
        raise FileNotFoundError(
            f"run directory {p} has no checkpoints/best.ckpt or checkpoints/last.ckpt"
        )
    raise FileNotFoundError(
        f"--pretrained {pretrained}: no such checkpoint file or run directory (give the .ckpt "
        "written by python -m vlexp.run, or its run directory)"
    )


def run_config_path(ckpt: Path, config: str | os.PathLike | None = None) -> Path:
    """The run config file of ``ckpt``: ``config`` when given, else
    ``<run dir>/.hydra/config.yaml`` (the checkpoint lives in ``<run dir>/checkpoints/``)."""
    path = (
        Path(config).expanduser()
        if config
        else ckpt.resolve().parent.parent / ".hydra" / "config.yaml"
    )
    if not path.is_file():
        raise FileNotFoundError(
            f"no run config at {path}: pass the config of the run that wrote {ckpt} "
            "(its .hydra/config.yaml) as config=PATH, or its run directory as run_dir=PATH"
        )
    return path


class RunConfigInCheckpoint(Callback):
    """Store the run's resolved config in every checkpoint written
    (``ckpt["hyper_parameters"]["config"]``, plain types only), and the config-group
    presets it was composed from (``["choices"]``, e.g. ``{"experiment": "tonics"}``)."""

    def __init__(
        self, config: DictConfig | Mapping[str, Any], choices: Mapping[str, str] | None = None
    ) -> None:
        self.config = plain_config(config)
        self.choices = {str(k): str(v) for k, v in (choices or {}).items()}

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        hyper = dict(checkpoint.get(HYPER_KEY) or {})
        hyper[CONFIG_KEY] = copy.deepcopy(self.config)
        hyper[CHOICES_KEY] = dict(self.choices)
        checkpoint[HYPER_KEY] = hyper


def plain_config(config: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """``config`` resolved to plain dicts, lists, strings and numbers (``???`` kept as text)."""
    if isinstance(config, DictConfig):
        return OmegaConf.to_container(config, resolve=True)  # type: ignore[return-value]
    return OmegaConf.to_container(OmegaConf.create(dict(config)), resolve=True)  # type: ignore[return-value]


def stored_choices(blob: Mapping[str, Any]) -> dict[str, str]:
    """The config-group presets a checkpoint's run was composed from (empty if unknown)."""
    hyper = blob.get(HYPER_KEY)
    choices = hyper.get(CHOICES_KEY) if isinstance(hyper, Mapping) else None
    return dict(choices) if isinstance(choices, Mapping) else {}


def stored_config(blob: Mapping[str, Any]) -> dict[str, Any] | None:
    """The run config a checkpoint dict carries, or None (checkpoints of older versions)."""
    hyper = blob.get(HYPER_KEY)
    config = hyper.get(CONFIG_KEY) if isinstance(hyper, Mapping) else None
    return dict(config) if isinstance(config, Mapping) else None


def checkpoint_config(
    ckpt: str | os.PathLike,
    config: str | os.PathLike | None = None,
    run_dir: str | os.PathLike | None = None,
    blob: Mapping[str, Any] | None = None,
) -> DictConfig:
    """The config of the run that wrote ``ckpt``: ``config`` (a YAML file) when given,
    else ``run_dir``'s ``.hydra/config.yaml``, else the config stored in the checkpoint,
    else the ``.hydra/config.yaml`` of the run directory holding it."""
    path = Path(ckpt)
    if config:
        return OmegaConf.load(run_config_path(path, config))  # type: ignore[return-value]
    if run_dir:
        run_yaml = Path(run_dir).expanduser() / ".hydra" / "config.yaml"
        return OmegaConf.load(run_config_path(path, run_yaml))  # type: ignore[return-value]
    embedded = stored_config(read_checkpoint(path) if blob is None else blob)
    if embedded is not None:
        return OmegaConf.create(embedded)
    sibling = path.resolve().parent.parent / ".hydra" / "config.yaml"
    if sibling.is_file():
        return OmegaConf.load(sibling)  # type: ignore[return-value]
    raise ConfigError(
        f"checkpoint '{ckpt}' carries no run config and has no .hydra/config.yaml beside its "
        "run directory: pass run_dir=<the run directory> or config=<its .hydra/config.yaml>"
    )


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The whole checkpoint dict (tensors and plain values only, memory-mapped)."""
    blob = load_torch_file(path, "checkpoint", mmap=True)
    if not isinstance(blob, dict):
        raise ValueError(f"checkpoint '{path}' is not a dict; give a .ckpt written by vlexp")
    return blob


def model_weights(
    ckpt: str | os.PathLike, blob: Mapping[str, Any] | None = None
) -> dict[str, torch.Tensor]:
    """The ``model.*`` weights of a vlexp checkpoint (``blob``: its dict, if already read),
    prefix removed."""
    state = read_checkpoint(ckpt) if blob is None else blob
    state = state.get("state_dict", state)
    weights = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
    if not weights:
        raise ValueError(
            f"checkpoint '{ckpt}' holds no 'model.*' weights; give a .ckpt written by "
            "python -m vlexp.run"
        )
    return weights


def checkpoint_step(path: str | Path) -> int:
    """``global_step`` stored in a checkpoint, read without running code from it.

    Raises :class:`vlexp.io.UnreadableFileError` for a truncated or corrupt file (a
    0-byte or half-written ``last.ckpt``: torch's zip format keeps its index at the
    end, so any truncation is caught); tensors are memory-mapped, not read.
    """
    if not zipfile.is_zipfile(path):  # torch.save's format; a torn write loses the index
        raise UnreadableFileError(
            f"checkpoint '{path}' is not a complete torch checkpoint (no zip index); it may "
            "be truncated or corrupt"
        )
    state = load_torch_file(path, "checkpoint", mmap=True)
    if not isinstance(state, dict) or "global_step" not in state:
        raise UnreadableFileError(f"checkpoint '{path}' holds no training state (global_step)")
    return int(state["global_step"])


def load_two_tower(
    ckpt: str | os.PathLike,
    config: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    run_dir: str | os.PathLike | None = None,
) -> Any:
    """The trained :class:`~vlexp.encoders.base.TwoTower` of a checkpoint (or run
    directory), rebuilt from the run's encoder config, in eval mode on ``device``."""
    model, _ = load_model_and_config(resolve_checkpoint(ckpt), config, run_dir)
    return model.to(device).eval()


def load_model_and_config(
    ckpt: str | os.PathLike,
    config: str | os.PathLike | None = None,
    run_dir: str | os.PathLike | None = None,
) -> tuple[Any, DictConfig]:
    """The trained two-tower of ``ckpt`` and its run config (see :func:`checkpoint_config`).

    The checkpoint is read first, without running code from it: a refused file stops
    before anything is built.
    """
    from vlexp.encoders import ENCODERS

    if config:  # a wrong config path is reported before the checkpoint is read
        run_config_path(Path(ckpt), config)
    blob = read_checkpoint(ckpt)
    weights = model_weights(ckpt, blob)
    cfg = checkpoint_config(ckpt, config, run_dir, blob=blob)
    model = ENCODERS.build(OmegaConf.to_container(cfg.encoder, resolve=True))
    counts = LoadCounts.of(model.state_dict(), weights)
    model.load_state_dict(weights, strict=True)
    loaded_weights(ckpt, f"encoder ({cfg.encoder.name}, the run's trained towers)", counts)
    return model, cfg


def load_module_and_data(
    ckpt: str, config: str | None = None, run_dir: str | None = None
) -> tuple[Any, Any]:
    """The trained two-tower (in a :class:`VLModule` without objective) and its datamodule."""
    from vlexp.objectives.base import Objective
    from vlexp.train.datamodule import VLDataModule
    from vlexp.train.module import VLModule

    model, cfg = load_model_and_config(Path(ckpt), config, run_dir)
    return VLModule(model, Objective()), VLDataModule.for_model(cfg, model)
