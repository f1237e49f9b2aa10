"""SoftAlign distils: its default teacher is not the student, and degenerate configs are refused.

With the student as its own teacher at its own scale, the soft target is
``(1 - a) onehot + a p`` (``p`` the student's softmax) and the gradient is ``(1 - a)`` times
CLIP's. These tests measure the mechanism itself: the gradient under the default config is
*not* proportional to CLIP's, and it equals the gradient of the cross-entropy against
targets written out by hand from a teacher whose weights are computed by hand.
"""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from vlexp.config import ConfigError, validate_config
from vlexp.encoders import ENCODERS
from vlexp.objectives import OBJECTIVES
from vlexp.objectives.distributed import gather_features

SMALL = ["encoder.vision_depth=1", "encoder.text_depth=1", "encoder.image_size=16"]
CAPTIONS = [
    "a red circle",
    "two blue squares",
    "a green triangle left of a circle",
    "a small yellow star",
    "three purple circles",
    "an orange square above a star",
    "a blue star next to a red square",
    "one green circle",
]


def _default_objective(make_cfg):
    """objective=softalign as shipped, all rows soft; plus the encoder config it mirrors."""
    cfg = make_cfg(["objective=softalign", "objective.soft_share=1.0", *SMALL])
    validate_config(cfg)
    encoder = OmegaConf.to_container(cfg.encoder, resolve=True)
    obj = OBJECTIVES.build(OmegaConf.to_container(cfg.objective, resolve=True), embed_dim=1)
    return obj.train(), encoder, cfg


def _perturbed(params: dict[str, torch.Tensor], seed: int, size: float) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {k: v + size * torch.randn(v.shape, generator=g) for k, v in params.items()}


def _load(model, params: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(params[name])


def _batch(model, n: int = 8) -> dict:
    g = torch.Generator().manual_seed(1)
    return {"image": torch.randn(n, 3, 16, 16, generator=g), **model.tokenize(CAPTIONS[:n])}


def _hand_reference(img, txt, scale, t_img, t_txt, alpha):
    """Symmetric cross-entropy against (1 - a) onehot + a softmax(teacher logits), in float64."""
    n = img.shape[0]
    s = scale * img.double() @ txt.double().T
    t = scale * t_img.double() @ t_txt.double().T
    eye = torch.eye(n, dtype=torch.float64)
    losses, targets = [], []
    for logits, t_logits in ((s, t), (s.T, t.T)):
        q = (1 - alpha) * eye + alpha * torch.exp(t_logits) / torch.exp(t_logits).sum(1, True)
        targets.append(q)
        losses.append(-(q * torch.log_softmax(logits, 1)).sum(1).mean())
    return 0.5 * (losses[0] + losses[1]), targets


def _grads(loss, tensors):
    return torch.cat([g.flatten().double() for g in torch.autograd.grad(loss, tensors)])


def _scale_residual(g: torch.Tensor, ref: torch.Tensor) -> float:
    """||g - c ref|| / ||g|| for the least-squares c: 0 iff g is a multiple of ref."""
    g, ref = g.double(), ref.double()
    c = (g @ ref) / (ref @ ref)
    return float((g - c * ref).norm() / g.norm())


def test_default_teacher_distils_and_matches_hand_targets(make_cfg) -> None:
    """Under the default config (EMA teacher) the gradient is not CLIP's, rescaled."""
    obj, encoder, _ = _default_objective(make_cfg)
    assert obj.teacher == "ema" and obj.ema_decay == 0.995
    torch.manual_seed(0)
    student = ENCODERS.build(encoder).eval()
    theta0 = {k: v.detach().clone() for k, v in student.named_parameters()}
    obj.on_train_batch_end(student)  # first optimiser step: the EMA starts at the student
    theta1 = _perturbed(theta0, seed=2, size=0.05)  # the student after some training
    _load(student, theta1)
    obj.on_train_batch_end(student)
    _load(student, _perturbed(theta1, seed=3, size=0.05))  # and after one more step

    # the teacher built by hand: d theta0 + (1 - d) theta1, in a fresh model
    d = 0.995
    teacher = ENCODERS.build(encoder).eval()
    _load(teacher, {k: d * theta0[k] + (1 - d) * theta1[k] for k in theta0})

    batch = _batch(student)
    with torch.no_grad():
        t_img = teacher.encode_image(batch["image"])
        t_txt = teacher.encode_text(batch["input_ids"], batch["attention_mask"])
    img = student.encode_image(batch["image"]).detach().requires_grad_(True)
    txt = student.encode_text(batch["input_ids"], batch["attention_mask"])
    txt = txt.detach().requires_grad_(True)
    scale = torch.tensor(14.0)
    out = obj(gather_features(img, txt), scale, batch, 1.0)  # progress 1: a = alpha_max
    alpha = float(out.components["softalign_alpha"])
    assert alpha == 0.5

    ref_loss, ref_targets = _hand_reference(img, txt, scale, t_img, t_txt, alpha)
    g_soft = _grads(out.loss, (img, txt))
    g_ref = _grads(ref_loss, (img, txt))
    torch.testing.assert_close(out.loss.double(), ref_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g_soft, g_ref, rtol=1e-4, atol=1e-6)
    entropy = torch.cat([-torch.special.xlogy(q, q).sum(1) for q in ref_targets]).mean()
    torch.testing.assert_close(
        out.components["target_entropy"].double(), entropy, rtol=1e-5, atol=0
    )

    clip = OBJECTIVES.build("clip")(gather_features(img, txt), scale, batch, 1.0)
    g_clip = _grads(clip.loss, (img, txt))
    residual = _scale_residual(g_soft, g_clip)
    cosine = float(torch.nn.functional.cosine_similarity(g_soft, g_clip, dim=0))
    assert residual > 0.1 and cosine < 0.99, (residual, cosine)  # measured: 0.39, 0.92

    # the measure can fail: the student as its own teacher gives (1 - a) times CLIP's gradient
    self_loss, _ = _hand_reference(img, txt, scale, img.detach(), txt.detach(), alpha)
    g_self = _grads(self_loss, (img, txt))
    assert _scale_residual(g_self, g_clip) < 1e-6
    torch.testing.assert_close(g_self, (1 - alpha) * g_clip, rtol=1e-4, atol=1e-7)


def test_self_teacher_at_own_temperature_is_not_clip() -> None:
    """The no-added-compute option (self teacher, own temperature) also moves the gradient."""
    g = torch.Generator().manual_seed(4)
    img = torch.nn.functional.normalize(torch.randn(10, 16, generator=g), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(10, 16, generator=g), dim=-1)
    img.requires_grad_(True)
    txt.requires_grad_(True)
    obj = OBJECTIVES.build(
        {
            "name": "softalign",
            "teacher": "self",
            "use_student_scale": False,
            "teacher_temperature": 0.035,
            "soft_share": 1.0,
            "schedule": "constant",
        }
    )
    scale = torch.tensor(1 / 0.07)
    g_soft = _grads(obj(gather_features(img, txt), scale, {}, 0.5).loss, (img, txt))
    g_clip = _grads(
        OBJECTIVES.build("clip")(gather_features(img, txt), scale, {}, 0.5).loss, (img, txt)
    )
    assert _scale_residual(g_soft, g_clip) > 0.05


# ------------------------------------------------------------------ refusals
def test_self_teacher_at_student_scale_is_refused_by_the_constructor() -> None:
    with pytest.raises(ValueError, match="CLIP with soft rows down-weighted"):
        OBJECTIVES.build({"name": "softalign", "teacher": "self", "use_student_scale": True})


@pytest.mark.parametrize(
    ("overrides", "key", "match"),
    [
        (["objective=softalign", "objective.teacher=self"], "objective.", "teacher=ema"),
        (
            [
                "objective=composite",
                "objective.terms.main.name=softalign",
                "+objective.terms.main.teacher=self",
            ],
            "objective.terms.main.",
            "teacher=self with use_student_scale=true",
        ),
        (["objective=softalign", "objective.ema_decay=0.0"], "objective.ema_decay=0.0", "(0, 1)"),
        (
            [
                "objective=softalign",
                "objective.teacher=self",
                "objective.use_student_scale=false",
                "objective.teacher_temperature=0.07",
                "encoder.init_temperature=0.07",
                "encoder.learn_temperature=false",
            ],
            "objective.",
            "frozen temperature",
        ),
    ],
)
def test_degenerate_configs_are_refused_by_validation(make_cfg, overrides, key, match) -> None:
    with pytest.raises(ConfigError) as err:
        validate_config(make_cfg(overrides))
    line = [x for x in str(err.value).splitlines() if key in x]
    assert len(line) == 1 and match in line[0] and "CLIP" in line[0]


@pytest.mark.parametrize(
    "overrides",
    [
        ["objective=softalign"],
        ["experiment=softalign"],
        [
            "objective=softalign",
            "objective.teacher=self",
            "objective.use_student_scale=false",
            "objective.teacher_temperature=0.035",
        ],
        # a learnable temperature only starts at tau_t: allowed (documented)
        ["objective=softalign", "objective.teacher=self", "objective.use_student_scale=false"],
        ["objective=composite", "objective.terms.main.name=softalign"],
    ],
)
def test_informative_configs_validate(make_cfg, overrides) -> None:
    validate_config(make_cfg(overrides))
