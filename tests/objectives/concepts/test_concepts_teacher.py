"""Frozen teachers: the packaged EfficientNet-Lite0 on real photos, local timm weights."""

import sys

import pytest
import torch
from PIL import Image

from vlexp.objectives.concepts.teachers import build_teacher, load_positional

CAT_CLASSES = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian Mau
CUP_CLASSES = {504, 967, 968}  # coffee mug, espresso, cup


@pytest.fixture(scope="module")
def lite0():
    return build_teacher()


def _top5(teacher, array) -> set[int]:
    x = teacher.pil_transform()(Image.fromarray(array))[None]
    return set(teacher.logits(x)[0].topk(5).indices.tolist())


def test_lite0_classifies_real_photos(lite0):
    import skimage.data

    assert lite0.num_concepts == 1000 and not lite0.multilabel
    assert lite0.concept_names[281] == "tabby cat"
    assert _top5(lite0, skimage.data.chelsea()) & CAT_CLASSES
    assert _top5(lite0, skimage.data.coffee()) & CUP_CLASSES


def test_lite0_on_student_normalised_images_matches_teacher_preprocessing(lite0):
    """Un-normalising a student batch and re-normalising for the teacher is exact."""
    g = torch.Generator().manual_seed(0)
    pixels = torch.rand(2, 3, 224, 224, generator=g)
    s_mean, s_std = (0.48, 0.45, 0.40), (0.27, 0.26, 0.28)
    student = (pixels - torch.tensor(s_mean).view(1, 3, 1, 1)) / torch.tensor(s_std).view(
        1, 3, 1, 1
    )
    teacher_in = (pixels - 0.5) / 0.5
    torch.testing.assert_close(
        lite0.logits_from_student(student, s_mean, s_std),
        lite0.logits(teacher_in),
        rtol=1e-4,
        atol=1e-4,
    )


def test_positional_loader_checks_count_and_shapes():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    good = {
        f"w{i}": torch.full_like(v, float(i)) for i, v in enumerate(model.state_dict().values())
    }
    load_positional(model, good, "toy")
    assert torch.all(model[1].weight == 2.0)
    with pytest.raises(ValueError, match="holds 3 tensors but Sequential expects 4"):
        load_positional(model, dict(list(good.items())[:3]), "toy")
    bad = dict(good, w2=torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"tensor #2 'w2' has shape \(4, 3\)"):
        load_positional(model, bad, "toy")


def test_timm_name_without_local_weights_fails_fast():
    with pytest.raises(ValueError, match="objective.teacher.weights=/path/to/weights"):
        build_teacher("resnet50")


def test_any_timm_classifier_with_local_weights(tmp_path):
    import timm

    torch.manual_seed(0)
    model = timm.create_model("test_efficientnet", pretrained=False, num_classes=7)
    path = tmp_path / "teacher.pth"
    torch.save({"state_dict": model.state_dict()}, path)
    names = tmp_path / "concepts.txt"
    names.write_text("\n".join(f"thing {i}" for i in range(7)))
    teacher = build_teacher("test_efficientnet", weights=str(path), concepts=str(names))
    assert teacher.num_concepts == 7 and teacher.concept_names[3] == "thing 3"
    assert teacher.input_size == 160 and teacher.identity["weights"] == str(path.resolve())
    x = torch.randn(2, 3, 160, 160)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(teacher.logits(x), model(x))
    with pytest.raises(ValueError, match="2 concept names given for 7"):
        build_teacher("test_efficientnet", weights=str(path), concepts=["a", "b"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_teacher("test_efficientnet", weights=str(tmp_path / "missing.pth"))


def test_synthetic_teacher_needs_weights(tmp_path):
    with pytest.raises(ValueError, match="train-synthetic"):
        build_teacher("synthetic")
    with pytest.raises(FileNotFoundError, match="vlexp teacher train-synthetic out=.*nope.pt"):
        build_teacher("synthetic", weights=str(tmp_path / "nope.pt"))


def test_train_synthetic_teacher_roundtrip(tmp_path, monkeypatch, capsys):
    import json

    from vlexp.cli.main import main
    from vlexp.data.synthetic import LEAF_CLASSES

    out = tmp_path / "teacher.pt"
    monkeypatch.setattr(sys, "argv", ["vlexp"])
    argv = ["teacher", "train-synthetic", f"out={out}", "num_train=256", "num_val=64"]
    main([*argv, "max_seconds=3", "epochs=2", "quiet=true", f"hydra.run.dir={tmp_path}/run"])
    lines = capsys.readouterr().out.splitlines()
    assert json.loads("\n".join(lines[lines.index("{") :]))["num_train"] == 256
    teacher = build_teacher("synthetic", weights=str(out))
    assert teacher.multilabel and teacher.concept_names == list(LEAF_CLASSES)
    assert teacher.input_size == 64
    info = torch.load(out, weights_only=False)["info"]
    assert info["num_train"] == 256 and 0.0 <= info["val"]["mean_ap"] <= 1.0
    x = torch.randn(3, 3, 64, 64)
    assert teacher.logits(x).shape == (3, len(LEAF_CLASSES))
