"""End-to-end runs of the trainer on the embedded synthetic data (small settings)."""

import json

import pytest
import torch

from vlexp.train.run import resolve_resume, train


def test_fast_dev_run_default_config(make_cfg):
    cfg = make_cfg(["debug=fast"])
    assert train(cfg) is None  # fast_dev_run returns no monitored metric


def test_tiny_run_writes_outputs(make_cfg, tmp_path):
    # 22 steps: the fit ends between validations (every 10 steps)
    cfg = make_cfg(["debug=tiny_run", "trainer.max_steps=22"])
    value = train(cfg)
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert value == metrics["monitor_value"] and 0.0 <= value <= 1.0
    # last.ckpt holds the final step (what resume=auto needs), best.ckpt a validated one
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == 22
    assert (run / "csv" / "metrics.csv").exists()
    for key in (
        "test/synthetic/i2t_R@1",
        "test/synthetic/t2i_R@10",
        "test/synthetic/zeroshot_top1",
        "test/compositional/i2t_R@5",
    ):
        assert key in metrics["test"], key
    assert metrics["global_step"] == 22


def _weights(ckpt: str) -> dict[str, torch.Tensor]:
    return torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]


@pytest.mark.slow
def test_resume_matches_uninterrupted_run(tmp_path, monkeypatch):
    """Train 2 epochs straight vs stop after epoch 1 and resume from last.ckpt: same weights.

    Both runs use the same config (max_epochs=2), so the LR schedule and the sampler's
    curriculum length agree; the interrupted run is stopped by a callback after epoch 1.
    """
    import lightning as L

    import vlexp.train.run as run_mod
    from tests.conftest import compose_cfg

    common = [
        "debug=tiny_run",
        "trainer.max_steps=-1",
        "trainer.val_check_interval=null",
        "trainer.check_val_every_n_epoch=1",
        "test_after_fit=false",
        "trainer.deterministic=true",
        "trainer.max_epochs=2",  # default (random) crops: each sample's crop has its own seed
    ]
    train(compose_cfg(common, output_dir=tmp_path / "full"))

    class StopAfterFirstEpoch(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            trainer.should_stop = True

    build = run_mod.build_trainer

    def interrupted(cfg, run_dir):
        trainer = build(cfg, run_dir)
        trainer.callbacks.append(StopAfterFirstEpoch())
        return trainer

    monkeypatch.setattr(run_mod, "build_trainer", interrupted)
    train(compose_cfg(common, output_dir=tmp_path / "part"))
    monkeypatch.setattr(run_mod, "build_trainer", build)
    assert (
        torch.load(tmp_path / "part" / "checkpoints" / "last.ckpt", weights_only=False)["epoch"]
        == 0
    )
    train(compose_cfg(common + [f"resume={tmp_path / 'part'}"], output_dir=tmp_path / "part"))
    a = _weights(str(tmp_path / "full" / "checkpoints" / "last.ckpt"))
    b = _weights(str(tmp_path / "part" / "checkpoints" / "last.ckpt"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)


def test_resume_errors_are_helpful(tmp_path):
    assert resolve_resume(None, tmp_path) is None
    assert resolve_resume("auto", tmp_path) is None  # nothing to resume: fresh start
    with pytest.raises(FileNotFoundError, match="resume=auto"):
        resolve_resume(str(tmp_path / "missing.ckpt"), tmp_path)
