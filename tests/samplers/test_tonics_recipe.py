"""experiment=tonics: composition, a fast run, and objective x sampler combinations."""

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import CONF_DIR, compose_cfg
from vlexp.train.run import train


def test_experiment_tonics_composes_the_recipe():
    cfg = compose_cfg(["experiment=tonics"])
    assert cfg.encoder.name == "pretrained_small" and cfg.encoder.image_size == 64
    assert cfg.sampler.name == "tonics" and cfg.objective.name == "clip"  # InfoNCE
    assert cfg.encoder.text.freeze == "all" and cfg.encoder.image.freeze == "all"  # locked
    assert cfg.data.source.finegrained_k == 4 and "tonics" in cfg.tags
    # the baseline and other objectives are plain overrides of the same experiment
    base = compose_cfg(["experiment=tonics", "sampler=random", "objective=diht"])
    assert base.sampler.name == "random" and base.objective.name == "composite"
    assert base.encoder.name == "pretrained_small"


def test_experiment_tonics_trains_only_the_projections_and_temperature():
    """The recipe locks both pre-trained towers: nothing inside either tower trains."""
    from omegaconf import OmegaConf

    from vlexp.encoders import ENCODERS

    cfg = compose_cfg(["experiment=tonics"])
    model = ENCODERS.build(OmegaConf.to_container(cfg.encoder, resolve=True))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and not any(n.startswith(("text_tower.", "image_tower.")) for n in trainable)
    assert {n.split(".")[0] for n in trainable} >= {"image_proj", "text_proj"}


def test_experiment_tonics_fast_dev_run(make_cfg):
    assert train(make_cfg(["experiment=tonics", "debug=fast"])) is None


@pytest.mark.slow
def test_experiment_tonics_short_run_reports_finegrained(make_cfg, tmp_path):
    """A real (4-step) run writes the fine-grained accuracy and its chance level."""
    cfg = make_cfg(
        [
            "experiment=tonics",
            "logger=csv",
            "viz.enabled=false",
            "data.source.num_train=128",
            "data.source.num_val=32",
            "data.source.num_test=32",
            "data.source.num_test_compositional=16",
            "data.batch_size=16",
            "data.eval_batch_size=32",
            "data.num_workers=0",
            "trainer.max_steps=4",
            "trainer.val_check_interval=4",
            "optim.warmup_steps=1",
            "data.source.finegrained_k=3",
        ]
    )
    train(cfg)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["sampler"] == "tonics" and metrics["encoder"] == "pretrained_small"
    assert 0.0 <= metrics["test"]["test/finegrained/finegrained_acc"] <= 1.0
    assert 1.0 <= metrics["test"]["test/finegrained/finegrained_rank"] <= 4.0
    row = [r for r in metrics["test_table"] if r["set"] == "finegrained"]
    assert len(row) == 1 and row[0]["metric"] == "finegrained_acc"
    assert row[0]["chance"] == pytest.approx(0.25)


OBJECTIVES = ["clip", "hnnce", "diht"] + (
    ["softalign"] if (Path(CONF_DIR) / "objective" / "softalign.yaml").is_file() else []
)


@pytest.fixture(scope="module")
def synthetic_teacher(tmp_path_factory):
    """A small untrained synthetic-class teacher, so objective=diht needs no download."""
    from vlexp.data.synthetic import LEAF_CLASSES
    from vlexp.objectives.concepts.teachers import SmallCNN, save_synthetic_teacher

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    net = SmallCNN(len(LEAF_CLASSES), width=8)
    save_synthetic_teacher(net, LEAF_CLASSES, 64, (0.5,) * 3, (0.25,) * 3, path)
    return path


@pytest.mark.parametrize("sampler", ["random", "tonics"])
@pytest.mark.parametrize("objective", OBJECTIVES)
def test_objective_sampler_combinations_run(objective, sampler, synthetic_teacher, tmp_path):
    """Every objective trains with either sampler (tiny towers, one fast_dev_run step)."""
    overrides = ["debug=fast", f"objective={objective}", f"sampler={sampler}"]
    if objective == "diht":
        overrides += [
            "objective.terms.concepts.teacher.name=synthetic",
            f"objective.terms.concepts.teacher.weights={synthetic_teacher}",
            "objective.terms.concepts.progress=false",
            f"paths.cache_dir={tmp_path / 'cache'}",
        ]
    cfg = compose_cfg(overrides, output_dir=tmp_path / "run")
    assert cfg.objective.name == ("composite" if objective == "diht" else objective)
    assert train(cfg) is None
