"""``optim.accum_freq``: towers in micro-batches, the loss over the whole batch.

The reference of every gradient check is the plain full-batch step (towers once on the
whole batch, one backward), computed in float64 on a copy of the same model.
"""

from __future__ import annotations

import copy
import csv
import math
from typing import Any

import pytest
import torch
from torch import nn

from tests.conftest import compose_cfg, tiny_encoder
from vlexp.config import ConfigError, validate_config
from vlexp.encoders import ENCODERS
from vlexp.encoders.base import TwoTower
from vlexp.objectives import OBJECTIVES
from vlexp.objectives.distributed import gather_features
from vlexp.train.accumulation import encode_accumulated, micro_batch_bounds
from vlexp.train.module import VLModule

B, D = 12, 16
TINY = tiny_encoder(D, context_length=8)


# ------------------------------------------------------------------ fixtures
def _model() -> TwoTower:
    torch.manual_seed(0)
    return ENCODERS.build(dict(TINY)).double()


def _batch(model: TwoTower) -> dict[str, Any]:
    g = torch.Generator().manual_seed(1)
    words = [f"w{i}" for i in range(12)]
    captions = [" ".join(words[(i + k) % 12] for k in range(1 + i % 5)) for i in range(B)]
    tok = model.tokenize(captions)
    return {
        "image": torch.randn(B, 3, 16, 16, generator=g, dtype=torch.float64),
        "input_ids": tok["input_ids"],
        "attention_mask": tok["attention_mask"],
        "index": torch.randperm(B, generator=g),
    }


def _objective(name: str, teacher_file: str) -> nn.Module:
    concepts = {
        "name": "concepts",
        "teacher": {"name": "synthetic", "weights": teacher_file},
        "text_weight": 1.0,
        "progress": False,
    }
    configs: dict[str, dict[str, Any]] = {
        "clip": {"name": "clip"},
        "hnnce": {"name": "hnnce", "alpha": 0.7, "beta1": 0.5, "beta2": 0.3},
        "softalign": {
            "name": "softalign",
            "teacher": "ema",
            "ema_encoder": TINY,
            "schedule": "constant",
            "alpha_max": 0.5,
            "soft_share": 0.5,
            "selection": "random",
            "seed": 7,
        },
        "diht": {
            "name": "composite",
            "terms": {
                "contrastive": {"name": "hnnce", "beta1": 0.5, "reduction": "sum"},
                "concepts": {**concepts, "weight": 0.5},
            },
        },
    }
    torch.manual_seed(2)
    obj = OBJECTIVES.build(configs[name], embed_dim=D).double()
    if name == "diht":
        term = obj.terms["concepts"]
        g = torch.Generator().manual_seed(3)
        term.set_targets(torch.randn(B, term.teacher.num_concepts, generator=g) * 3)
    return obj


def _prepare_teacher(obj: nn.Module, model: TwoTower) -> None:
    """An EMA teacher that is not the student: copy, then move the student away."""
    if getattr(obj, "ema_model", None) is None:
        return
    obj.on_train_batch_end(model)
    with torch.no_grad():
        g = torch.Generator().manual_seed(4)
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g, dtype=p.dtype))


def _step_grads(model: TwoTower, obj: nn.Module, batch: dict, accum_freq: int) -> dict:
    """Loss and parameter gradients of one training step, as :class:`VLModule` runs it."""
    module = VLModule(model, obj, accum_freq=accum_freq)
    module.zero_grad(set_to_none=True)
    loss = _loss(module, batch)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
    return {"loss": loss.detach(), **grads}


def _loss(module: VLModule, batch: dict) -> torch.Tensor:
    image, text = encode_accumulated(module.model, batch, module.accum_freq)
    return module.objective_step(image, text, batch).loss


def _naive_accumulation_grads(model: TwoTower, obj: nn.Module, batch: dict, k: int) -> dict:
    """What ``accumulate_grad_batches`` computes: each micro-batch its own loss, averaged."""
    module = VLModule(model, obj)
    module.zero_grad(set_to_none=True)
    for start, stop in micro_batch_bounds(B, k):
        part = {key: v[start:stop] for key, v in batch.items()}
        image = model.encode_image(part["image"])
        text = model.encode_text(part["input_ids"], part["attention_mask"])
        (module.objective_step(image, text, part).loss / k).backward()
    return {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


# ------------------------------------------------------------------ tests
def test_micro_batch_bounds_cover_the_batch_once():
    for n in range(1, 20):
        for k in range(1, 25):
            bounds = micro_batch_bounds(n, k)
            assert len(bounds) == min(n, k)
            rows = [i for start, stop in bounds for i in range(start, stop)]
            assert rows == list(range(n))
            sizes = [stop - start for start, stop in bounds]
            assert max(sizes) - min(sizes) <= 1
    with pytest.raises(ValueError, match="accum_freq"):
        micro_batch_bounds(4, 0)


@pytest.mark.parametrize("name", ["clip", "hnnce", "softalign", "diht"])
def test_accumulated_gradient_equals_full_batch(name, teacher_file):
    """Every parameter's gradient (towers, logit scale, concept heads) in float64.

    Five uneven micro-batches (3, 3, 2, 2, 2 rows) of a batch of 12.
    """
    k = 5
    model, obj = _model(), _objective(name, teacher_file)
    _prepare_teacher(obj, model)
    batch = _batch(model)
    full = _step_grads(copy.deepcopy(model), copy.deepcopy(obj), batch, accum_freq=1)
    acc = _step_grads(copy.deepcopy(model), copy.deepcopy(obj), batch, accum_freq=k)
    assert full.keys() == acc.keys()
    assert "model.log_logit_scale" in full
    if name == "diht":
        assert "objective.terms.concepts.image_head.weight" in full
    for key, ref in full.items():
        torch.testing.assert_close(acc[key], ref, rtol=1e-9, atol=1e-12, msg=key)
    # the check can fail: plain accumulation (negatives per micro-batch) differs
    naive = _naive_accumulation_grads(copy.deepcopy(model), copy.deepcopy(obj), batch, k)
    diff = (naive["model.image_proj.weight"] - full["model.image_proj.weight"]).abs().max()
    assert diff > 1e-4 * full["model.image_proj.weight"].abs().max()


class _DropoutTower(nn.Module):
    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_in, 32), nn.Dropout(0.5), nn.GELU())
        self.out = nn.Linear(32, d_out)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x.flatten(1).to(self.out.weight.dtype)
        return self.out(self.net(x))


def _dropout_model() -> TwoTower:
    torch.manual_seed(5)
    return TwoTower(
        _DropoutTower(3 * 16 * 16, 24), _DropoutTower(8, 24), 24, 24, None, embed_dim=D
    ).double()


def test_dropout_masks_are_replayed_in_the_recompute():
    """With dropout, the gradient equals autograd through the same micro-batch forwards.

    Reference: the same seed, the same micro-batches encoded one after another with
    activations kept (no recompute). A recompute that drew fresh masks would differ.
    """
    g = torch.Generator().manual_seed(6)
    batch = {
        "image": torch.randn(B, 3, 16, 16, generator=g, dtype=torch.float64),
        "input_ids": torch.randint(1, 50, (B, 8), generator=g),
        "attention_mask": torch.ones(B, 8, dtype=torch.long),
    }
    obj = OBJECTIVES.build({"name": "clip"})
    results = []
    for mode in ("reference", "accumulated", "other_seed"):
        model = _dropout_model().train()
        torch.manual_seed(11 if mode != "other_seed" else 12)
        if mode == "reference":
            parts = [
                (
                    model.encode_image(batch["image"][s:e]),
                    model.encode_text(batch["input_ids"][s:e], batch["attention_mask"][s:e]),
                )
                for s, e in micro_batch_bounds(B, 4)
            ]
            image, text = (torch.cat(x) for x in zip(*parts))
        else:
            image, text = encode_accumulated(model, batch, 4)
        feats = gather_features(image, text)
        obj(feats, model.logit_scale(), batch, 0.0).loss.backward()
        results.append({n: p.grad.clone() for n, p in model.named_parameters()})
    ref, acc, other = results
    for key in ref:
        torch.testing.assert_close(acc[key], ref[key], rtol=1e-10, atol=1e-13, msg=key)
    assert not torch.allclose(other["image_tower.out.weight"], ref["image_tower.out.weight"])


def test_no_grad_encoding_runs_the_towers_once():
    """Under ``torch.no_grad`` the batch is not split (nothing to recompute)."""
    model = _model()
    batch = _batch(model)
    calls = []
    hook = model.image_tower.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    with torch.no_grad():
        image, _ = encode_accumulated(model, batch, 4)
    hook.remove()
    assert calls == [B] and image.shape == (B, D)
    assert torch.allclose(image.norm(dim=1), torch.ones(B, dtype=image.dtype))


def test_config_accepts_accum_freq_and_refuses_bad_values(tmp_path):
    validate_config(compose_cfg(["optim.accum_freq=4"], output_dir=tmp_path))
    for bad in ("0", "1.5", "true"):
        cfg = compose_cfg([f"optim.accum_freq={bad}"], output_dir=tmp_path)
        with pytest.raises(ConfigError, match="optim.accum_freq"):
            validate_config(cfg)
    cfg = compose_cfg(["trainer.accumulate_grad_batches=4", "data.batch_size=8"], tmp_path)
    with pytest.raises(ConfigError, match=r"data.batch_size=32 optim.accum_freq=4"):
        validate_config(cfg)
    with pytest.raises(ValueError, match="accum_freq"):
        VLModule(_model(), OBJECTIVES.build({"name": "clip"}), accum_freq=0)


@pytest.mark.slow
def test_short_fit_with_accumulation_matches_the_full_batch_fit(tmp_path):
    """Three optimiser steps with accum_freq=4 log the same losses and end at the same
    weights as accum_freq=1 (Lightning's logging, clipping and LR schedule unchanged)."""
    from vlexp.train.run import train

    common = [
        "debug=tiny_run",
        "data.source.num_train=64",
        "data.source.num_val=16",
        "data.source.num_test=16",
        "data.source.num_test_compositional=8",
        "data.batch_size=16",
        "trainer.max_steps=3",
        "trainer.val_check_interval=3",
        "trainer.log_every_n_steps=1",
        "test_after_fit=false",
        "viz.enabled=false",
    ]
    weights, losses = {}, {}
    for k in (1, 4):
        run = tmp_path / f"k{k}"
        train(compose_cfg([*common, f"optim.accum_freq={k}"], output_dir=run))
        ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
        assert ckpt["global_step"] == 3
        weights[k] = ckpt["state_dict"]
        rows = list(csv.DictReader(open(next(run.glob("csv/**/metrics.csv")))))
        losses[k] = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(losses[1]) == 3 and all(math.isfinite(x) for x in losses[1])
    assert losses[4] == pytest.approx(losses[1], rel=1e-5)
    for key, ref in weights[1].items():
        if torch.is_tensor(ref) and ref.is_floating_point():
            torch.testing.assert_close(weights[4][key], ref, rtol=1e-4, atol=1e-5, msg=key)


def _rank_accumulated(rank: int, local: int, k: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One rank's loss and tower gradients with ``accum_freq=k`` on its slice of the batch."""
    from tests.ddp_harness import rank_slice

    model = _model()
    batch = {key: v[rank_slice(rank, local)] for key, v in _batch(model).items()}
    image, text = encode_accumulated(model, batch, k)
    obj = OBJECTIVES.build({"name": "hnnce", "beta1": 0.5})
    loss = obj(gather_features(image, text), model.logit_scale(), batch, 0.0).loss
    loss.backward()
    return loss.detach(), [p.grad for p in model.parameters() if p.grad is not None]


@pytest.mark.slow
def test_accumulation_under_two_ranks_equals_one_process_full_batch():
    """2 gloo ranks x 3 micro-batches each: DDP's averaged gradient is the full batch's."""
    from tests.ddp_harness import ddp_loss_and_grads

    loss, grads = ddp_loss_and_grads(_rank_accumulated, B // 2, 3)
    model = _model()
    batch = _batch(model)
    image = model.encode_image(batch["image"])
    text = model.encode_text(batch["input_ids"], batch["attention_mask"])
    obj = OBJECTIVES.build({"name": "hnnce", "beta1": 0.5})
    ref = obj(gather_features(image, text), model.logit_scale(), batch, 0.0).loss
    ref.backward()
    ref_grads = [p.grad for p in model.parameters() if p.grad is not None]
    torch.testing.assert_close(torch.as_tensor(loss), ref.detach(), rtol=1e-10, atol=0)
    assert len(grads) == len(ref_grads)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(torch.as_tensor(got), want, rtol=1e-9, atol=1e-12)
