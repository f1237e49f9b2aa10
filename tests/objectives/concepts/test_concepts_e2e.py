"""objective=diht end to end through the trainer (tiny run, synthetic teacher, cache reuse)."""

import json

import pytest
import torch

from tests.conftest import compose_cfg
from vlexp.objectives.concepts.teachers import SmallCNN, save_synthetic_teacher
from vlexp.train.run import train


@pytest.mark.slow
def test_diht_tiny_run_caches_teacher_targets(tmp_path):
    from vlexp.data.synthetic import LEAF_CLASSES

    torch.manual_seed(0)
    teacher = tmp_path / "teacher.pt"
    save_synthetic_teacher(
        SmallCNN(len(LEAF_CLASSES), width=8), LEAF_CLASSES, 64, (0.5,) * 3, (0.25,) * 3, teacher
    )
    common = [
        "debug=tiny_run",
        "objective=diht",
        "objective.terms.concepts.teacher.name=synthetic",
        f"objective.terms.concepts.teacher.weights={teacher}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        "trainer.max_steps=6",
        "trainer.val_check_interval=6",
        "test_after_fit=false",
    ]
    train(compose_cfg(common, output_dir=tmp_path / "a"))
    entries = list((tmp_path / "cache" / "concepts").glob("*/meta.json"))
    assert len(entries) == 1
    meta = json.loads(entries[0].read_text())
    assert meta["dataset"]["len"] == 512 and meta["teacher"]["name"] == "synthetic"
    stamp = entries[0].stat().st_mtime
    train(compose_cfg(common, output_dir=tmp_path / "b"))  # second run loads the cache
    assert list((tmp_path / "cache" / "concepts").glob("*/meta.json")) == entries
    assert entries[0].stat().st_mtime == stamp
    ckpt = torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", weights_only=False)
    keys = ckpt["state_dict"].keys()
    assert "objective.terms.concepts.image_head.weight" in keys
    assert not any("teacher" in k for k in keys)
