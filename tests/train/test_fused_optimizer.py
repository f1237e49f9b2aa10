"""The fused AdamW that VLModule picks by default makes the same update as the loop."""

from __future__ import annotations

import torch


def _train(fused: bool) -> list[torch.Tensor]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 4))
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=1e-2,
        betas=(0.9, 0.98),
        eps=1e-6,
        fused=fused,
    )
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        x = torch.randn(32, 8, generator=g)
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return [p.detach().clone() for p in model.parameters()]


def test_fused_adamw_matches_the_per_tensor_loop():
    for a, b in zip(_train(fused=True), _train(fused=False)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


class _Trainer:
    def __init__(self, precision: str) -> None:
        self.precision = precision


def test_auto_choice_is_fused_unless_told_otherwise(tmp_path):
    from tests.conftest import compose_cfg
    from vlexp.train.run import build_components

    module, _ = build_components(compose_cfg(["debug=fast"], output_dir=tmp_path))
    assert module.fused is None  # optim.fused: null by default = auto
    module._trainer = _Trainer("32-true")
    assert module._use_fused() is True  # CPU, full precision
    module._trainer = _Trainer("16-mixed")  # vlexp clips and unscales itself
    assert module._use_fused() is True
    module.fused = False
    module._trainer = _Trainer("32-true")
    assert module._use_fused() is False
