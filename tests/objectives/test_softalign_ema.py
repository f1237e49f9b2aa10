"""objective=softalign with the EMA teacher: updates, state dict, restore, Lightning resume."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from tests.conftest import tiny_encoder
from vlexp.encoders import ENCODERS
from vlexp.objectives import OBJECTIVES
from vlexp.objectives.distributed import gather_features
from vlexp.train.module import VLModule

TINY = tiny_encoder(16, context_length=12)
CAPTIONS = [
    "a red circle",
    "two blue squares",
    "a green triangle left of a circle",
    "a small yellow star",
    "three purple circles",
    "an orange square above a star",
]


def _objective(**kw):
    return OBJECTIVES.build(
        {
            "name": "softalign",
            "teacher": "ema",
            "ema_encoder": TINY,
            "soft_share": 1.0,
            "schedule": "constant",
            **kw,
        }
    )


def _student(seed: int = 0):
    torch.manual_seed(seed)
    return ENCODERS.build(TINY)


def _batch(model, n: int = 6, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    tok = model.tokenize(CAPTIONS[:n])
    return {"image": torch.randn(n, 3, 16, 16, generator=g), **tok, "index": torch.arange(n)}


def _embed(model, batch):
    with torch.no_grad():
        return (
            model.encode_image(batch["image"]),
            model.encode_text(batch["input_ids"], batch["attention_mask"]),
        )


def test_ema_updates_follow_the_formula() -> None:
    student = _student()
    obj = _objective(ema_decay=0.9)
    assert all(not p.requires_grad for p in obj.ema_model.parameters())
    assert not list(p for p in obj.parameters() if p.requires_grad)  # nothing to optimise
    obj.on_train_batch_end(torch.nn.ModuleDict({"model": student}))  # module.model
    for (n, pe), (_, ps) in zip(obj.ema_model.named_parameters(), student.named_parameters()):
        assert torch.equal(pe, ps), n  # initialised to the student at the first step
    old = {n: p.clone() for n, p in student.named_parameters()}
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.5)
    obj.on_train_batch_end(student)
    for n, pe in obj.ema_model.named_parameters():
        expected = 0.9 * old[n] + 0.1 * (old[n] + 0.5)
        torch.testing.assert_close(pe, expected, rtol=1e-6, atol=1e-6)


def test_teacher_is_student_until_first_update_then_ema() -> None:
    student = _student()
    obj = _objective(ema_decay=0.5)
    batch = _batch(student)
    img, txt = _embed(student, batch)
    feats = gather_features(img, txt)
    scale = torch.tensor(7.0)
    s = scale * img @ txt.T
    t_i2t, t_t2i = obj.teacher_logits(feats, scale, s, s.T, batch)
    assert torch.equal(t_i2t, s) and torch.equal(t_t2i, s.T)
    obj.on_train_batch_end(student)
    with torch.no_grad():
        for p in student.parameters():
            p.mul_(1.5)
    obj.on_train_batch_end(student)
    e_img, e_txt = _embed(obj.ema_model, batch)
    t_i2t, t_t2i = obj.teacher_logits(feats, scale, s, s.T, batch)
    torch.testing.assert_close(t_i2t, 7.0 * e_img @ e_txt.T)
    torch.testing.assert_close(t_t2i, 7.0 * e_txt @ e_img.T)
    assert not torch.allclose(t_i2t, s)
    out = obj(feats, scale, batch, 0.5)
    assert torch.isfinite(out.loss)


def test_ema_state_is_saved_and_restored() -> None:
    student = _student()
    obj = _objective(ema_decay=0.8)
    obj.on_train_batch_end(student)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.1)
    obj.on_train_batch_end(student)
    state = obj.state_dict()
    assert any(k.startswith("ema_model.") for k in state)
    assert state["_extra_state"]["ema_initialized"] is True
    fresh = _objective(ema_decay=0.8)
    assert not fresh.ema_initialized
    fresh.load_state_dict(state)
    assert fresh.ema_initialized
    for (n, a), (_, b) in zip(
        obj.ema_model.state_dict().items(), fresh.ema_model.state_dict().items()
    ):
        assert torch.equal(a, b), n
    batch = _batch(student)
    img, txt = _embed(student, batch)
    feats, scale = gather_features(img, txt), torch.tensor(5.0)
    s = scale * img @ txt.T
    for x, y in zip(
        obj.teacher_logits(feats, scale, s, s.T, batch),
        fresh.teacher_logits(feats, scale, s, s.T, batch),
    ):
        assert torch.equal(x, y)


def test_train_mode_keeps_teacher_in_eval() -> None:
    obj = _objective().train()
    assert obj.training and not obj.ema_model.training


def test_mismatched_ema_encoder_is_a_clear_error() -> None:
    obj = _objective()
    other = ENCODERS.build({**TINY, "vision_depth": 2})
    with pytest.raises(ValueError, match="ema_encoder"):
        obj.on_train_batch_end(other)


def test_missing_batch_keys_is_a_clear_error() -> None:
    student = _student()
    obj = _objective()
    obj.on_train_batch_end(student)
    img, txt = _embed(student, _batch(student))
    with pytest.raises(KeyError, match="teacher=self"):
        obj(gather_features(img, txt), torch.tensor(5.0), {}, 0.5)


# ----------------------------------------------------------------- Lightning resume
class _Pairs(Dataset):
    def __init__(self, model, n: int = 8) -> None:
        g = torch.Generator().manual_seed(3)
        self.images = torch.randn(n, 3, 16, 16, generator=g)
        tok = model.tokenize([CAPTIONS[i % len(CAPTIONS)] + f" {i}" for i in range(n)])
        self.ids, self.mask = tok["input_ids"], tok["attention_mask"]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {
            "image": self.images[i],
            "input_ids": self.ids[i],
            "attention_mask": self.mask[i],
            "index": i,
        }


class _StopAt(L.Callback):
    """Interrupt a run after ``step`` optimiser steps (as a preempted job would be)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step >= self.step:
            trainer.should_stop = True


class _Alphas(L.Callback):
    """Records the distillation weight the objective uses at every step."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def on_train_batch_start(self, trainer, module, *args) -> None:
        self.values.append(module.objective.ramp(module.progress()))


def _fit(
    module, ckpt_dir, max_steps: int, ckpt_path: str | None = None, stop_at: int | None = None
):
    L.seed_everything(0)
    alphas = _Alphas()
    data = DataLoader(_Pairs(module.model), batch_size=8, shuffle=False)
    trainer = L.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=str(ckpt_dir),
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[alphas] + ([_StopAt(stop_at)] if stop_at else []),
    )
    trainer.fit(module, train_dataloaders=data, ckpt_path=ckpt_path)
    trainer.alphas = alphas.values
    return trainer


def _module():
    student = _student(5)
    obj = _objective(
        ema_decay=0.5, soft_share=0.5, schedule="linear", alpha_max=0.5, ramp_end=0.5, seed=13
    )
    return VLModule(student, obj, lr=1e-2, warmup_steps=1)


@pytest.mark.slow
def test_lightning_resume_restores_ema_schedule_and_selection(tmp_path) -> None:
    """4 steps straight == 2 steps, checkpoint, 2 more steps in a new module.

    One batch per epoch, so a resumed epoch sees the same data as an uninterrupted one.
    """
    straight = _module()
    assert _fit(straight, tmp_path / "a", max_steps=4).alphas == [0.0, 0.25, 0.5, 0.5]

    first = _module()
    trainer = _fit(first, tmp_path / "b", max_steps=4, stop_at=2)
    assert trainer.global_step == 2
    ckpt = str(tmp_path / "half.ckpt")
    trainer.save_checkpoint(ckpt)
    saved = torch.load(ckpt, weights_only=False)["state_dict"]
    assert any(k.startswith("objective.ema_model.") for k in saved)
    assert saved["objective._extra_state"]["calls"] == 2

    resumed = _module()
    trainer = _fit(resumed, tmp_path / "b", max_steps=4, ckpt_path=ckpt)
    assert trainer.global_step == 4
    assert trainer.alphas == [0.5, 0.5]  # the schedule resumes at step 2 of 4
    assert resumed.progress() == straight.progress() == 1.0
    assert resumed.objective.calls == straight.objective.calls == 4
    for (n, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        if torch.is_tensor(a):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=n)
