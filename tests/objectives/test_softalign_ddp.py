"""softalign under 2-process gloo DDP == one process holding the concatenated batch.

Covers what tests/objectives/test_ddp_equivalence.py (default config) does not: least-confident
selection (confidences gathered across ranks), a teacher temperature, and the EMA
teacher (its embeddings computed from each rank's batch and gathered).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import tiny_encoder
from tests.ddp_harness import assert_same, ddp_loss_and_grads, rank_slice

B_LOCAL, D_IN = 6, 10
TINY = tiny_encoder(16, context_length=12)

CONFIGS = {
    "least_confident": {
        "selection": "least_confident",
        "soft_share": 0.4,
        "schedule": "cosine",
        "ramp_end": 0.8,
        "alpha_max": 0.7,
        "teacher": "self",
        "use_student_scale": False,
        "teacher_temperature": 0.1,
    },
    "ema_random": {
        "teacher": "ema",
        "ema_encoder": TINY,
        "soft_share": 0.3,
        "alpha_max": 0.6,
        "schedule": "constant",
        "seed": 4,
    },
    "ema_least_confident": {
        "teacher": "ema",
        "ema_encoder": TINY,
        "soft_share": 0.5,
        "selection": "least_confident",
        "alpha_max": 0.8,
        "schedule": "constant",
    },
}


def _inputs():
    g = torch.Generator().manual_seed(0)
    n = 2 * B_LOCAL
    x_img, x_txt = torch.randn(n, D_IN, generator=g), torch.randn(n, D_IN, generator=g)
    batch = {
        "image": torch.randn(n, 3, 16, 16, generator=g),
        "input_ids": torch.randint(1, 1000, (n, 12), generator=g),
        "attention_mask": torch.ones(n, 12, dtype=torch.long),
    }
    return x_img, x_txt, batch


def _objective(key: str):
    from vlexp.objectives import OBJECTIVES

    obj = OBJECTIVES.build({"name": "softalign", **CONFIGS[key]})
    if obj.ema_model is not None:  # the teacher: a tiny model, identical on every rank
        from vlexp.encoders import ENCODERS

        torch.manual_seed(7)
        obj.on_train_batch_end(ENCODERS.build(TINY))
    return obj


def _loss_and_grads(obj, x_img, x_txt, batch, dim: int):
    from vlexp.objectives.distributed import gather_features

    torch.manual_seed(1)
    img_tower, txt_tower = torch.nn.Linear(D_IN, dim), torch.nn.Linear(D_IN, dim)
    img = F.normalize(img_tower(x_img), dim=-1)
    txt = F.normalize(txt_tower(x_txt), dim=-1)
    out = obj(gather_features(img, txt), torch.tensor(12.0), batch, 0.5)
    out.loss.backward()
    grads = [p.grad.clone() for p in (*img_tower.parameters(), *txt_tower.parameters())]
    return out.loss.detach(), grads


def _rank_loss(rank: int, key: str):
    x_img, x_txt, batch = _inputs()
    sl = rank_slice(rank, B_LOCAL)
    local_batch = {k: v[sl] for k, v in batch.items()}
    return _loss_and_grads(_objective(key), x_img[sl], x_txt[sl], local_batch, 16)


@pytest.mark.slow
@pytest.mark.parametrize("key", sorted(CONFIGS))
def test_softalign_two_process_matches_single_process(key: str) -> None:
    ddp = ddp_loss_and_grads(_rank_loss, key)
    x_img, x_txt, batch = _inputs()
    assert_same(ddp, _loss_and_grads(_objective(key), x_img, x_txt, batch, 16))
