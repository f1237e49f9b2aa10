"""conf/objective/softalign.yaml and conf/experiment/softalign.yaml compose and build."""

from __future__ import annotations

import inspect

import torch
from omegaconf import OmegaConf

from vlexp.objectives import OBJECTIVES
from vlexp.objectives.softalign import SoftAlignObjective


def _build(cfg):
    return OBJECTIVES.build(OmegaConf.to_container(cfg.objective, resolve=True), embed_dim=128)


def test_objective_yaml_names_every_option(make_cfg) -> None:
    cfg = make_cfg(["objective=softalign"])
    # encoder_config is runtime context (passed by the trainer), not a config option
    options = set(inspect.signature(SoftAlignObjective.__init__).parameters) - {
        "self",
        "encoder_config",
    }
    assert set(cfg.objective) - {"name"} == options
    obj = _build(cfg)
    assert isinstance(obj, SoftAlignObjective)
    # the default teacher is an EMA copy of the student's towers, not the student itself
    assert obj.teacher == "ema" and obj.ema_model is not None
    assert not obj.use_student_scale or obj.teacher != "self"
    # the defaults in the yaml are the constructor's defaults (one source of truth)
    defaults = {
        k: p.default
        for k, p in inspect.signature(SoftAlignObjective.__init__).parameters.items()
        if k not in ("self", "ema_encoder", "encoder_config")
    }
    assert {k: cfg.objective[k] for k in defaults} == defaults


def test_experiment_selects_softalign_with_noise(make_cfg) -> None:
    cfg = make_cfg(["experiment=softalign"])
    assert cfg.objective.name == "softalign"
    assert cfg.data.source.noisy_caption_frac == 0.2
    assert "softalign" in cfg.tags
    baseline = make_cfg(["experiment=softalign", "objective=clip"])
    assert baseline.objective.name == "clip"
    assert baseline.trainer.max_steps == cfg.trainer.max_steps


def test_ema_teacher_from_config_mirrors_the_encoder(make_cfg) -> None:
    cfg = make_cfg(
        [
            "objective=softalign",
            "objective.teacher=ema",
            "encoder.vision_depth=1",
            "encoder.text_depth=1",
        ]
    )
    obj = _build(cfg)
    assert obj.ema_model is not None
    assert obj.ema_model.image_size == cfg.data.source.image_size
    assert len(obj.ema_model.image_tower.blocks) == 1
    assert not any(p.requires_grad for p in obj.parameters())


def test_softalign_as_a_composite_term(make_cfg) -> None:
    """A composite term gets the EMA teacher's architecture from the runtime context."""
    cfg = make_cfg(
        [
            "objective=composite",
            "objective.terms.main.name=softalign",
            "encoder.vision_depth=1",
            "encoder.text_depth=1",
        ]
    )
    encoder = OmegaConf.to_container(cfg.encoder, resolve=True)
    obj = OBJECTIVES.build(
        OmegaConf.to_container(cfg.objective, resolve=True), embed_dim=128, encoder_config=encoder
    )
    assert len(obj.terms["main"].ema_model.image_tower.blocks) == 1
    img = torch.nn.functional.normalize(torch.randn(8, 16), dim=-1)
    from vlexp.objectives.distributed import gather_features

    out = obj(gather_features(img, img.flip(0)), torch.tensor(10.0), {}, 0.5)
    assert "main/softalign_alpha" in out.components
