"""objective=composite: weighted sums of registered objectives; objective=diht wiring."""

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from tests.conftest import compose_cfg
from vlexp.objectives import OBJECTIVES
from vlexp.objectives.composite import CompositeObjective
from vlexp.objectives.concepts.objective import ConceptDistillation
from vlexp.objectives.distributed import gather_features
from vlexp.objectives.hnnce import HNNCEObjective


def _feats(b=8, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return gather_features(
        F.normalize(torch.randn(b, d, generator=g), dim=-1),
        F.normalize(torch.randn(b, d, generator=g), dim=-1),
    )


def test_weighted_sum_of_terms():
    feats, scale = _feats(), torch.tensor(14.0)
    comp = OBJECTIVES.build(
        {
            "name": "composite",
            "terms": {"a": {"name": "clip"}, "b": {"name": "hnnce", "weight": 0.25, "beta1": 1.0}},
        }
    )
    out = comp(feats, scale, {}, 0.0)
    clip = OBJECTIVES.build("clip")(feats, scale, {}, 0.0)
    hn = OBJECTIVES.build({"name": "hnnce", "beta1": 1.0})(feats, scale, {}, 0.0)
    torch.testing.assert_close(out.loss, clip.loss + 0.25 * hn.loss)
    assert set(out.components) == {
        "a/loss",
        "a/loss_i2t",
        "a/loss_t2i",
        "b/loss",
        "b/loss_i2t",
        "b/loss_t2i",
    }
    torch.testing.assert_close(out.components["b/loss"], hn.loss)


def test_zero_weight_terms_are_not_built_and_errors_explain():
    comp = OBJECTIVES.build(
        {
            "name": "composite",
            "terms": {"a": {"name": "clip"}, "b": {"name": "concepts", "weight": 0}},
        }
    )
    assert list(comp.terms) == ["a"]
    with pytest.raises(ValueError, match="every term has weight 0"):
        OBJECTIVES.build({"name": "composite", "terms": {"a": {"name": "clip", "weight": 0}}})
    with pytest.raises(ValueError, match=r"objective.terms.a must be an objective config"):
        OBJECTIVES.build({"name": "composite", "terms": {"a": {"weight": 1}}})
    with pytest.raises(TypeError, match=r"objective.terms.a: objective 'hnnce' got unknown"):
        OBJECTIVES.build({"name": "composite", "terms": {"a": {"name": "hnnce", "beta": 1}}})


def test_setup_and_context_reach_terms(tmp_path):
    comp = OBJECTIVES.build(
        {"name": "composite", "terms": {"c": {"name": "concepts", "on_the_fly": True}}},
        embed_dim=24,
        image_mean=(0.1, 0.2, 0.3),
        image_std=(0.3, 0.3, 0.3),
    )
    term = comp.terms["c"]
    assert term.image_head.in_features == 24 and term.student_mean == (0.1, 0.2, 0.3)
    calls = []
    term.setup = lambda train_set, cache_dir=None: calls.append((train_set, cache_dir))
    comp.setup("train-set", str(tmp_path))
    assert calls == [("train-set", str(tmp_path))]


def test_diht_config_builds_hnnce_plus_concepts():
    cfg = compose_cfg(["objective=diht"])
    obj = OBJECTIVES.build(OmegaConf.to_container(cfg.objective, resolve=True), embed_dim=32)
    assert isinstance(obj, CompositeObjective)
    assert isinstance(obj.terms["contrastive"], HNNCEObjective)
    hn, cd = obj.terms["contrastive"], obj.terms["concepts"]
    assert isinstance(cd, ConceptDistillation) and cd.teacher.num_concepts == 1000
    assert hn.alpha == 1.0 and hn.beta1 == 0.5 and hn.reduction == "sum"
    no_concepts = compose_cfg(["objective=diht", "objective.terms.concepts.weight=0"])
    obj = OBJECTIVES.build(OmegaConf.to_container(no_concepts.objective, resolve=True))
    assert list(obj.terms) == ["contrastive"]


def test_any_mix_is_expressible_from_the_command_line():
    cfg = compose_cfg(
        [
            "objective=composite",
            "objective.terms.main.name=hnnce",
            "+objective.terms.concepts={name: concepts, weight: 0.5}",
        ]
    )
    obj = OBJECTIVES.build(OmegaConf.to_container(cfg.objective, resolve=True), embed_dim=32)
    assert obj.weights == {"main": 1.0, "concepts": 0.5}
    assert isinstance(obj.terms["main"], HNNCEObjective)


def test_experiment_diht_uses_the_synthetic_teacher_and_cat():
    cfg = compose_cfg(["experiment=diht"])
    assert cfg.filter.name == "cat" and cfg.objective.name == "composite"
    teacher = cfg.objective.terms.concepts.teacher
    assert teacher.name == "synthetic" and teacher.weights.endswith("teachers/synthetic.pt")
    assert cfg.data.source.low_complexity_frac > 0 and cfg.data.source.text_in_image_frac > 0
