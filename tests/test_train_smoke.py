"""End-to-end runs of the trainer on the embedded synthetic data (small settings)."""

import json

import pytest
import torch

from vlexp.run import resolve_resume, train


def test_fast_dev_run_default_config(make_cfg):
    cfg = make_cfg(["debug=fast"])
    assert train(cfg) is None  # fast_dev_run returns no monitored metric


def test_tiny_run_writes_outputs(make_cfg, tmp_path):
    cfg = make_cfg(["debug=tiny_run"])
    value = train(cfg)
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert value == metrics["monitor_value"] and 0.0 <= value <= 1.0
    assert (run / "checkpoints" / "last.ckpt").exists()
    assert (run / "csv" / "metrics.csv").exists()
    for key in ("test/synthetic/i2t_R@1", "test/synthetic/t2i_R@10", "test/synthetic/zeroshot_top1",
                "test/compositional/i2t_R@5"):
        assert key in metrics["test"], key
    assert metrics["global_step"] == 20


def _weights(ckpt: str) -> dict[str, torch.Tensor]:
    return torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]


@pytest.mark.slow
@pytest.mark.xfail(
    reason="known open bug (issue 2): a run resumed from last.ckpt at an epoch boundary does "
    "not yet reproduce the uninterrupted run's weights exactly (first mismatch: "
    "model.log_logit_scale); cause not found yet",
    strict=False,
)
def test_resume_matches_uninterrupted_run(tmp_path):
    """Train 2 epochs straight vs 1 epoch, stop, resume from last.ckpt: same weights."""
    from tests.conftest import compose_cfg

    common = ["debug=tiny_run", "trainer.max_steps=-1", "trainer.val_check_interval=null",
              "trainer.check_val_every_n_epoch=1", "test_after_fit=false",
              "trainer.deterministic=true",
              # the global torch RNG (random crops) is not part of a checkpoint: use the
              # deterministic (full-image) crop so both runs see identical pixels
              "data.train_crop_scale=[1.0,1.0]"]
    train(compose_cfg(common + ["trainer.max_epochs=2"], output_dir=tmp_path / "full"))
    train(compose_cfg(common + ["trainer.max_epochs=1"], output_dir=tmp_path / "part"))
    resumed = common + ["trainer.max_epochs=2", f"resume={tmp_path / 'part'}"]
    train(compose_cfg(resumed, output_dir=tmp_path / "part"))
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
