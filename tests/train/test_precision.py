"""Precision: objectives in full precision, dtypes kept apart, clipping with fused AdamW.

The end-to-end runs train, evaluate and resume every precision the CPU can run, and each
GPU trainer preset with its accelerator swapped to CPU, so no preset ships broken.
"""

from __future__ import annotations

import copy
import csv
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import compose_cfg, tiny_encoder
from vlexp.encoders import ENCODERS
from vlexp.objectives import OBJECTIVES
from vlexp.objectives.distributed import gather_features
from vlexp.train.module import VLModule

B, D = 24, 32
PRECISIONS_LISTED = ("32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true")


# ------------------------------------------------------------------ fixtures
def _tiny_model():
    torch.manual_seed(0)
    model = ENCODERS.build(tiny_encoder(D))
    with torch.no_grad():  # the largest scale: where low-precision logits hurt most
        model.log_logit_scale.fill_(math.log(100.0))
    return model


OBJECTIVE_CONFIGS = {
    "clip": {"name": "clip"},
    "hnnce": {"name": "hnnce", "alpha": 1.0, "beta1": 0.5},
    "softalign": {
        "name": "softalign",
        "teacher": "self",
        "use_student_scale": False,
        "teacher_temperature": 0.05,
        "selection": "least_confident",
        "schedule": "constant",
        "alpha_max": 0.5,
    },
    "concepts": {"name": "concepts", "teacher": {"name": "synthetic"}, "text_weight": 1.0},
    "siglip": {"name": "siglip"},
}


def _objective(name: str, teacher_file: str):
    cfg = copy.deepcopy(OBJECTIVE_CONFIGS[name])
    if name == "concepts":
        cfg["teacher"]["weights"] = teacher_file
    torch.manual_seed(1)
    obj = OBJECTIVES.build(cfg, embed_dim=D)
    if name == "concepts":
        g = torch.Generator().manual_seed(2)
        obj.set_targets(torch.randn(B, obj.teacher.num_concepts, generator=g) * 3)
        with torch.no_grad():  # confident heads, as after training (logits of a few units)
            for head in (obj.image_head, obj.text_head):
                head.weight.normal_()  # rows longer than 1: a cosine classifier
                head.log_scale.fill_(math.log(30.0))
    return obj


def _features() -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings as bf16 towers hand them back: unit rows, rounded to bfloat16."""
    g = torch.Generator().manual_seed(3)
    image = F.normalize(torch.randn(B, D, generator=g), dim=1)
    text = F.normalize(image + 0.6 * torch.randn(B, D, generator=g), dim=1)
    return image.bfloat16(), text.bfloat16()


def _float64_reference(obj, image, text, logit_scale, batch):
    """The objective on the same inputs in float64, no autocast."""
    ref = copy.deepcopy(obj).double()
    feats = gather_features(image.double(), text.double())
    return ref(feats, logit_scale.double(), batch, 0.0)


# ------------------------------------------------------------------ objectives
@pytest.mark.parametrize("name", sorted(OBJECTIVE_CONFIGS))
def test_objectives_compute_in_float32_under_bf16_autocast(name, teacher_file):
    """Under bf16 autocast the module's loss equals the float64 loss to float32 accuracy."""
    obj = _objective(name, teacher_file)
    module = VLModule(_tiny_model(), obj)
    image, text = _features()
    batch = {"index": torch.arange(B)}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = module.objective_step(image, text, batch)
    ref = _float64_reference(obj, image, text, module.model.logit_scale().detach(), batch)
    assert out.loss.dtype == torch.float32
    torch.testing.assert_close(out.loss.double(), ref.loss.double(), rtol=1e-6, atol=1e-6)
    for key, value in ref.components.items():
        torch.testing.assert_close(
            out.components[key].double(), value.double(), rtol=1e-5, atol=1e-5, msg=key
        )


@pytest.mark.parametrize("name", sorted(OBJECTIVE_CONFIGS))
def test_plain_autocast_would_change_the_loss(name, teacher_file):
    """Why the objective leaves autocast: the same call inside it misses by far more."""
    obj = _objective(name, teacher_file)
    image, text = _features()
    scale = torch.tensor(100.0)
    batch = {"index": torch.arange(B)}
    ref = _float64_reference(obj, image, text, scale, batch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        naive = obj(gather_features(image.float(), text.float()), scale, batch, 0.0)
    # 50x the tolerance of the test above
    assert abs(naive.loss.double() - ref.loss.double()).item() > 5e-5 * abs(ref.loss.item())


def test_gather_casts_both_modalities_and_keeps_gradients():
    image = torch.randn(4, D).bfloat16().requires_grad_()
    text = torch.randn(4, D, requires_grad=True)
    feats = gather_features(image, text, dtype=torch.float32)
    for t in (feats.image, feats.text, feats.image_all, feats.text_all):
        assert t.dtype == torch.float32
    assert torch.equal(feats.image, image.float())  # local rows are the gathered columns
    (feats.image.sum() + 2 * feats.text_all.sum()).backward()
    assert image.grad.dtype == torch.bfloat16 and torch.equal(
        image.grad, torch.ones(4, D).bfloat16()
    )
    assert torch.equal(text.grad, torch.full((4, D), 2.0))


def test_true_precision_casts_towers_but_not_the_objective(teacher_file):
    """bf16-true converts the module; concept heads and the EMA teacher stay in float32."""
    concepts = _objective("concepts", teacher_file)
    softalign = OBJECTIVES.build(
        {"name": "softalign", "teacher": "ema", "ema_encoder": {"name": "tiny", "embed_dim": D}},
        embed_dim=D,
    )
    obj = OBJECTIVES.build({"name": "composite", "terms": {"a": {"name": "clip"}}}, embed_dim=D)
    obj.terms["c"], obj.terms["s"] = concepts, softalign
    module = VLModule(_tiny_model(), obj)
    module.to(torch.bfloat16)
    assert {p.dtype for p in module.model.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in module.objective.parameters()} == {torch.float32}
    assert module.objective_dtype == torch.float32
    module.double()  # 64-true: everything in float64, the objective too
    assert {p.dtype for p in module.parameters()} == {torch.float64}
    assert module.objective_dtype == torch.float64


def test_validation_accepts_every_precision_and_refuses_float64_on_mps():
    from vlexp.config import ConfigError, validate_config

    for precision in PRECISIONS_LISTED:
        validate_config(compose_cfg(["trainer=gpu", f"trainer.precision={precision}"]))
    cfg = compose_cfg(["trainer=gpu", "trainer.accelerator=mps", "trainer.precision=64-true"])
    with pytest.raises(ConfigError, match="64-true: Apple MPS has no float64; use 32-true"):
        validate_config(cfg)


# ------------------------------------------------------------------ optimizer
def _module_with_trainer(precision: str, scaler=None, clip: float | None = 1.0) -> VLModule:
    module = VLModule(_tiny_model(), OBJECTIVES.build({"name": "clip"}))
    module._trainer = SimpleNamespace(
        precision=precision,
        precision_plugin=SimpleNamespace(scaler=scaler),
        gradient_clip_val=clip,
        gradient_clip_algorithm="norm",
        is_global_zero=True,
        estimated_stepping_batches=10,
    )
    return module


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed", "16-mixed", "bf16-true", "64-true"])
def test_auto_optimizer_is_fused_at_every_precision(precision, caplog):
    module = _module_with_trainer(precision)
    with caplog.at_level("INFO", logger="vlexp.train.module"):
        opt = module.configure_optimizers()["optimizer"]
    assert opt.defaults["fused"] is True
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("optimizer:")]
    assert lines == [
        f"optimizer: AdamW fused=True, clipping by clip_grad_norm_ at 1.0 in vlexp "
        f"(precision {precision}, cpu)"
    ]
    module.fused = False
    assert module.configure_optimizers()["optimizer"].defaults["fused"] is False


def test_fused_step_under_grad_scaler_is_unscaled_then_clipped():
    """16-mixed + fused AdamW: vlexp unscales, clips, and the scaler's step applies once.

    Reference: the unscaled loss's gradients clipped by hand in float64 and the per-tensor
    (unfused) AdamW step. ``eps`` is large so a gradient unscaled twice would show.
    """
    torch.manual_seed(0)
    layer = torch.nn.Linear(8, 4)
    ref = copy.deepcopy(layer)
    x = torch.randn(16, 8)
    kw = {"lr": 0.1, "betas": (0.9, 0.98), "eps": 1e-3, "weight_decay": 0.0}

    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    opt = torch.optim.AdamW(layer.parameters(), fused=True, **kw)
    scaler.scale(layer(x).pow(2).sum()).backward()
    module = _module_with_trainer("16-mixed", scaler=scaler, clip=1.0)
    module.configure_gradient_clipping(opt, 1.0, "norm")

    ref_opt = torch.optim.AdamW(ref.parameters(), foreach=False, **kw)
    ref(x).pow(2).sum().backward()
    grads = [p.grad.double() for p in ref.parameters()]
    norm = torch.sqrt(sum((g**2).sum() for g in grads))
    assert norm > 1.0  # clipping is active
    for p, g in zip(layer.parameters(), grads):
        torch.testing.assert_close(p.grad.double(), g / norm, rtol=1e-5, atol=1e-7)
    for p in ref.parameters():
        p.grad = (p.grad.double() / norm).float()

    scaler.step(opt)
    scaler.update()
    ref_opt.step()
    for a, b in zip(layer.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_clipping_off_and_by_value():
    module = _module_with_trainer("32-true", clip=None)
    p = torch.nn.Parameter(torch.zeros(3))
    opt = torch.optim.AdamW([p])
    p.grad = torch.tensor([3.0, -4.0, 0.5])
    module.configure_gradient_clipping(opt, None, "norm")
    assert torch.equal(p.grad, torch.tensor([3.0, -4.0, 0.5]))
    module.configure_gradient_clipping(opt, 1.0, "value")
    assert torch.equal(p.grad, torch.tensor([1.0, -1.0, 0.5]))


# ------------------------------------------------------------------ end to end
def _cpu_supports_fp16() -> bool:
    try:
        x = torch.ones(2, 2, dtype=torch.float16, requires_grad=True)
        (x @ x).sum().backward()
        torch.optim.AdamW([x], fused=True).step()
        return True
    except (RuntimeError, NotImplementedError):
        return False


PRECISIONS = [
    "32-true",
    "bf16-mixed",
    "16-mixed",  # Lightning runs it as bf16-mixed on CPU (fp16 autocast is CUDA's)
    "bf16-true",
    pytest.param(
        "16-true",
        marks=pytest.mark.skipif(not _cpu_supports_fp16(), reason="no float16 on this CPU"),
    ),
    "64-true",
]


def _every_objective(teacher_file: str) -> list[str]:
    """HN-NCE + concept heads (DiHT) + SoftAlign with an EMA teacher + SigLIP, TOnICS batches."""
    return [
        "objective=diht_synthetic",
        f"objective.terms.concepts.teacher.weights={teacher_file}",
        "objective.terms.concepts.text_weight=1.0",
        "objective.terms.concepts.progress=false",
        "+objective.terms.soft={name: softalign, weight: 0.5, teacher: ema}",
        "+objective.terms.sigmoid={name: siglip, weight: 0.5}",
        "sampler=tonics",
    ]


def _small(run: Path, steps: int, cache: Path) -> list[str]:
    return [
        "debug=tiny_run",
        "data.source.num_train=96",
        "data.source.num_val=32",
        "data.source.num_test=32",
        "data.source.num_test_compositional=16",
        "data.batch_size=8",
        "data.eval_batch_size=32",
        f"trainer.max_steps={steps}",
        "trainer.val_check_interval=2",
        "trainer.log_every_n_steps=1",
        "viz.num_images=4",
        "viz.num_queries=2",
        f"paths.cache_dir={cache}",
    ]


def _train_losses(run: Path) -> list[float]:
    rows = list(csv.DictReader(open(next(run.glob("csv/**/metrics.csv")))))
    return [float(r["train/loss"]) for r in rows if r.get("train/loss")]


def _check_run(run: Path, steps: int) -> dict:
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["global_step"] == steps
    losses = _train_losses(run)
    assert losses and all(math.isfinite(x) for x in losses), losses
    assert 0.0 <= metrics["test"]["test/synthetic/i2t_R@1"] <= 1.0
    assert "test/synthetic/zeroshot_top1" in metrics["test"]
    return metrics


@pytest.mark.slow
@pytest.mark.parametrize("precision", PRECISIONS)
def test_every_precision_trains_evaluates_and_resumes(precision, teacher_file, tmp_path):
    """Every objective (one composite), the TOnICS sampler, eval, pictures and a resume."""
    from vlexp.train.run import train

    run = tmp_path / "run"
    extra = [f"trainer.precision={precision}", *_every_objective(teacher_file)]
    train(compose_cfg(_small(run, 2, tmp_path / "cache") + extra, output_dir=run))
    _check_run(run, 2)
    assert list((run / "viz").glob("similarity_step*.png"))
    train(
        compose_cfg(_small(run, 4, tmp_path / "cache") + extra + [f"resume={run}"], output_dir=run)
    )
    _check_run(run, 4)
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    dtypes = {k: v.dtype for k, v in last["state_dict"].items() if torch.is_tensor(v)}
    tower = {"bf16-true": torch.bfloat16, "16-true": torch.float16, "64-true": torch.float64}
    assert dtypes["model.image_proj.weight"] == tower.get(precision, torch.float32)
    head = torch.float64 if precision == "64-true" else torch.float32
    assert dtypes["objective.terms.concepts.image_head.weight"] == head


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["gpu", "ddp", "multinode"])
def test_gpu_presets_train_on_cpu(preset, teacher_file, tmp_path):
    """Each GPU preset as shipped (its precision, clipping, optimizer) on one CPU process."""
    from vlexp.train.run import train

    cfg = compose_cfg(
        _small(tmp_path / "run", 2, tmp_path / "cache")
        + [f"trainer={preset}", "trainer.accelerator=cpu", "trainer.devices=1"]
        + ["trainer.strategy=auto", "trainer.num_nodes=1", "viz.enabled=false"]
        + _every_objective(teacher_file),
        output_dir=tmp_path / "run",
    )
    assert cfg.trainer.precision == "bf16-mixed" and cfg.trainer.gradient_clip_val == 1.0
    train(cfg)
    _check_run(tmp_path / "run", 2)
