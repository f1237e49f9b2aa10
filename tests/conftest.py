"""Tests of vlexp/. Modules without a test file of their own, and the tests that cover them:

- io.py: encoders/test_open_clip.py, test_safe_loading.py, train/test_resume_checkpoints.py
- registry.py: test_config.py, test_config_validation.py
- run.py: cli/test_doc_commands.py, cli/test_sources_export_cli.py, experiments/test_experiment_harness.py, test_config_validation.py ...
- run_options.py: the tests of the modules that use it (no direct import)
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def compose_cfg(
    overrides: list[str] | None = None, output_dir: str | Path | None = None
) -> DictConfig:
    """Compose conf/train.yaml with overrides; set paths.output_dir when given."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides or [], return_hydra_config=False)
    if output_dir is not None:
        with open_dict(cfg):
            cfg.paths.output_dir = str(output_dir)
    return cfg


def tiny_encoder(embed_dim: int = 16, **changes: object) -> dict:
    """Config of the smallest ``encoder=tiny`` model the unit tests train (one block per
    tower, width 32, 16 px images), with ``changes`` applied."""
    return {
        "name": "tiny",
        "embed_dim": embed_dim,
        "image_size": 16,
        "patch_size": 8,
        "vision_width": 32,
        "vision_depth": 1,
        "vision_heads": 2,
        "text_width": 32,
        "text_depth": 1,
        "text_heads": 2,
        **changes,
    }


@pytest.fixture
def make_cfg(tmp_path):
    """Compose a config whose outputs go to a temporary directory."""

    def _make(overrides: list[str] | None = None) -> DictConfig:
        return compose_cfg(overrides, output_dir=tmp_path / "run")

    return _make


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory) -> str:
    """An untrained synthetic concept teacher over the synthetic data's leaf classes, saved
    the way vlexp loads teachers (test modules that need another teacher define their own)."""
    import torch

    from vlexp.data.synthetic import LEAF_CLASSES
    from vlexp.objectives.concepts.teachers import SmallCNN, save_synthetic_teacher

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("teacher") / "synthetic.pt"
    save_synthetic_teacher(
        SmallCNN(len(LEAF_CLASSES), width=8), LEAF_CLASSES, 64, (0.5,) * 3, (0.25,) * 3, path
    )
    return str(path)
