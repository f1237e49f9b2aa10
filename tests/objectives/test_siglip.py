"""objective=siglip: the sigmoid loss against a float64 write-out and open_clip's
SigLipLoss (loss and gradients), its initialisation, its learnable bias, its options,
its composites, open_clip checkpoints with a logit bias, and a tiny training run."""

import json
import math

import open_clip
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from open_clip.loss import SigLipLoss

from tests.conftest import compose_cfg, tiny_encoder
from vlexp.config import ConfigError, validate_config
from vlexp.encoders import ENCODERS
from vlexp.encoders.open_clip_tower import tiny_open_clip_config
from vlexp.objectives import OBJECTIVES, gather_features
from vlexp.objectives.siglip import _SigmoidBlockLoss, sigmoid_loss


def _features(n=7, d=6, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(n, d, generator=g, dtype=dtype), dim=-1)
    txt = F.normalize(torch.randn(n, d, generator=g, dtype=dtype), dim=-1)
    return img.requires_grad_(), txt.requires_grad_()


def _formula(img, txt, t, b):
    """-1/B sum_i sum_j log sigmoid(z_ij (t x_i.y_j + b)), written out pair by pair."""
    n = img.shape[0]
    total = 0.0
    for i in range(n):
        for j in range(n):
            z = 1.0 if i == j else -1.0
            logit = t * torch.dot(img[i], txt[j]) + b
            total = total + torch.log1p(torch.exp(-z * logit))  # -log sigmoid(z l)
    return total / n


def _leaves(*tensors):
    return [t.detach().clone().requires_grad_() for t in tensors]


@pytest.mark.parametrize("t,b", [(10.0, -10.0), (3.0, 0.5), (25.0, -4.0)])
def test_loss_and_gradients_match_the_float64_formula(t, b):
    img, txt = _features()
    scale = torch.tensor(t, dtype=torch.float64, requires_grad=True)
    bias = torch.tensor(b, dtype=torch.float64, requires_grad=True)
    ours = sigmoid_loss(img, txt, scale, bias)
    ours.backward()
    r_img, r_txt, r_scale, r_bias = _leaves(img, txt, scale, bias)
    ref = _formula(r_img, r_txt, r_scale, r_bias)
    ref.backward()
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    for a, r in ((img, r_img), (txt, r_txt), (scale, r_scale), (bias, r_bias)):
        torch.testing.assert_close(a.grad, r.grad, rtol=1e-10, atol=1e-12)


def test_block_backward_passes_gradcheck():
    img, txt = _features(n=4, d=3)
    scale = torch.tensor(4.0, dtype=torch.float64, requires_grad=True)
    bias = torch.tensor(-1.0, dtype=torch.float64, requires_grad=True)
    for diagonal in (True, False):
        assert torch.autograd.gradcheck(
            lambda *x, d=diagonal: _SigmoidBlockLoss.apply(*x, d), (img, txt, scale, bias)
        )


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_objective_matches_open_clip_sigliploss(dtype, tol):
    """open_clip's own loss on the same features, scale and bias: loss and every gradient."""
    img, txt = _features(n=9, d=8, dtype=dtype, seed=3)
    objective = OBJECTIVES.build({"name": "siglip", "init_bias": -3.0}).to(dtype)
    scale = torch.tensor(7.0, dtype=dtype, requires_grad=True)
    out = objective(gather_features(img, txt), scale, {}, 0.0)
    out.loss.backward()
    r_img, r_txt, r_scale = _leaves(img, txt, scale)
    r_bias = torch.tensor(-3.0, dtype=dtype, requires_grad=True)
    ref = SigLipLoss()(r_img, r_txt, r_scale, r_bias)
    ref.backward()
    torch.testing.assert_close(out.loss, ref, rtol=tol, atol=tol)
    pairs = ((img, r_img), (txt, r_txt), (scale, r_scale), (objective.logit_bias, r_bias))
    for a, r in pairs:
        torch.testing.assert_close(a.grad, r.grad, rtol=tol, atol=tol)
    assert out.components["logit_bias"].item() == -3.0


def test_paper_initialisation_from_the_preset_and_the_signature():
    cfg = compose_cfg(["objective=siglip", "encoder.init_temperature=0.07"])
    objective = OBJECTIVES.build(OmegaConf.to_container(cfg.objective, resolve=True))
    bare = OBJECTIVES.build("siglip")  # a composite term without options: the same defaults
    model = ENCODERS.build(tiny_encoder())
    assert model.logit_scale().item() == pytest.approx(1 / 0.07)
    objective.prepare_model(model)
    assert model.log_logit_scale.item() == pytest.approx(math.log(10.0))  # t' = log 10
    assert model.log_logit_scale.requires_grad
    for obj in (objective, bare):
        assert obj.logit_bias.item() == -10.0 and obj.logit_bias.requires_grad
        assert obj.init_scale == 10.0


def test_init_scale_null_keeps_the_encoders_temperature():
    model = ENCODERS.build(tiny_encoder(init_temperature=0.05))
    OBJECTIVES.build({"name": "siglip", "init_scale": None}).prepare_model(model)
    assert model.logit_scale().item() == pytest.approx(20.0)


@pytest.mark.slow
def test_bias_and_scale_are_optimised_and_checkpointed(make_cfg, tmp_path):
    from vlexp.train.run import build_components, train

    cfg = make_cfg(["objective=siglip", "debug=tiny_run", "trainer.max_steps=12"])
    module, _ = build_components(cfg)
    names = dict(module.named_parameters())
    assert names["objective.logit_bias"].requires_grad
    assert module.model.log_logit_scale.item() == pytest.approx(math.log(10.0))
    train(cfg)
    run = tmp_path / "run"
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    bias = state["state_dict"]["objective.logit_bias"].item()
    log_scale = state["state_dict"]["model.log_logit_scale"].item()
    assert bias != -10.0 and log_scale != pytest.approx(math.log(10.0), abs=1e-7)
    metrics = json.loads((run / "metrics.json").read_text())
    assert math.isfinite(metrics["monitor_value"])
    # the checkpoint is evaluated like any other (the bias belongs to the objective)
    from vlexp.train.checkpoints import load_model_and_config

    model, _ = load_model_and_config(run / "checkpoints" / "last.ckpt")
    assert model.log_logit_scale.item() == pytest.approx(log_scale)


@pytest.mark.parametrize(
    "overrides,key",
    [
        (["objective=siglip", "objective.init_scale=0"], "objective.init_scale=0"),
        (["objective=siglip", "objective.init_scale=-2"], "objective.init_scale=-2"),
        (["objective=siglip", "objective.init_bias=low"], "objective.init_bias=low"),
        (["objective=siglip", "+objective.bias=1"], "objective.bias: unknown option"),
        (["objective=siglip", "objective.init_scale=200"], "encoder.max_logit_scale=100"),
        (
            ["objective=siglip_concepts", "objective.terms.main.init_scale=-1"],
            "objective.terms.main.init_scale=-1",
        ),
        (
            ["objective=composite", "objective.terms.main.name=siglip", "+objective.terms.main.init_scale=500"],
            "objective.terms.main.init_scale=500",
        ),
    ],
)  # fmt: skip
def test_bad_options_fail_in_one_line_naming_the_key(overrides, key, tmp_path):
    with pytest.raises(ConfigError) as err:
        validate_config(compose_cfg(overrides, output_dir=tmp_path))
    message = str(err.value)
    assert key in message and "\n" not in message


def test_init_scale_null_and_max_scale_raised_are_valid(tmp_path):
    validate_config(compose_cfg(["objective=siglip", "objective.init_scale=null"], tmp_path))
    validate_config(
        compose_cfg(
            ["objective=siglip", "objective.init_scale=200", "encoder.max_logit_scale=300"],
            tmp_path,
        )
    )


def test_siglip_plus_concepts_is_one_override(teacher_file):
    cfg = compose_cfg(
        [
            "objective=siglip_concepts",
            "objective.terms.concepts.teacher.name=synthetic",
            f"objective.terms.concepts.teacher.weights={teacher_file}",
        ]
    )
    validate_config(cfg)
    objective = OBJECTIVES.build(OmegaConf.to_container(cfg.objective, resolve=True), embed_dim=8)
    assert set(objective.terms) == {"main", "concepts"}
    assert type(objective.terms["main"]).__name__ == "SigLipObjective"
    img, txt = _features(n=6, d=8, dtype=torch.float32)
    scale = torch.tensor(10.0)
    alone = OBJECTIVES.build("siglip")(gather_features(img, txt), scale, {}, 0.0).loss
    main = objective.terms["main"](gather_features(img, txt), scale, {}, 0.0).loss
    torch.testing.assert_close(main, alone)
    model = ENCODERS.build(tiny_encoder(embed_dim=8))
    objective.prepare_model(model)  # reaches the siglip term through the composite
    assert model.logit_scale().item() == pytest.approx(10.0)


def test_composite_override_with_another_term_sums_them():
    objective = OBJECTIVES.build(
        {"name": "composite", "terms": {"main": {"name": "siglip"}, "nce": {"name": "clip", "weight": 0.5}}}
    )  # fmt: skip
    img, txt = _features(n=6, d=8, dtype=torch.float32)
    feats, scale = gather_features(img, txt), torch.tensor(10.0)
    out = objective(feats, scale, {}, 0.0)
    expected = OBJECTIVES.build("siglip")(feats, scale, {}, 0.0).loss
    expected = expected + 0.5 * OBJECTIVES.build("clip")(feats, scale, {}, 0.0).loss
    torch.testing.assert_close(out.loss, expected)
    assert "main/logit_bias" in out.components


@pytest.fixture
def siglip_checkpoint(tmp_path):
    """A tiny open_clip sigmoid-loss model (with a logit bias) saved as open_clip saves it."""
    cfg = tiny_open_clip_config(
        embed_dim=16, image_size=32, vision_width=32, vision_layers=1, vision_head_width=16,
        text_width=32, text_layers=1, text_heads=2, context_length=16,
    )  # fmt: skip
    cfg["init_logit_bias"] = -10.0
    torch.manual_seed(0)
    clip = open_clip.model.CustomTextCLIP(
        cfg["embed_dim"], cfg["vision_cfg"], cfg["text_cfg"], init_logit_bias=-10.0
    )
    with torch.no_grad():
        clip.logit_bias.fill_(-6.5)
        clip.logit_scale.fill_(math.log(17.0))
    torch.save(clip.state_dict(), tmp_path / "siglip.pt")
    return cfg, str(tmp_path / "siglip.pt")


def test_open_clip_checkpoint_with_a_logit_bias_loads_into_siglip(siglip_checkpoint):
    cfg, path = siglip_checkpoint
    model = ENCODERS.build({"name": "open_clip", "model_cfg": cfg, "pretrained": path})
    assert model.pretrained_logit_bias == pytest.approx(-6.5)
    objective = OBJECTIVES.build("siglip")
    objective.prepare_model(model)
    assert objective.logit_bias.item() == pytest.approx(-6.5)
    assert model.logit_scale().item() == pytest.approx(17.0)  # the checkpoint's, not 10
    fresh = ENCODERS.build({"name": "open_clip", "model_cfg": cfg})  # no refusal without weights
    assert fresh.pretrained_logit_bias is None


def test_cli_prints_the_preset_with_cfg_job():
    import subprocess
    import sys
    from pathlib import Path

    proc = subprocess.run(
        [sys.executable, "-m", "vlexp.cli.main", "train", "--cfg", "job", "objective=siglip"],
        cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    printed = OmegaConf.create(proc.stdout).objective
    assert dict(printed) == {"name": "siglip", "init_scale": 10.0, "init_bias": -10.0}


@pytest.mark.parametrize("sampler", ["random", "tonics"])
@pytest.mark.parametrize("filter_", ["none", "cat"])
def test_composes_with_every_sampler_and_filter(sampler, filter_, tmp_path):
    cfg = compose_cfg(["objective=siglip", f"sampler={sampler}", f"filter={filter_}"], tmp_path)
    validate_config(cfg)
    assert cfg.objective.name == "siglip"


def test_one_training_step_with_the_curriculum_sampler(make_cfg):
    from vlexp.train.run import train

    assert train(make_cfg(["objective=siglip", "sampler=tonics", "debug=fast"])) is None
