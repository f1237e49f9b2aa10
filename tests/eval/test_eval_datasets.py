"""Evaluation sets from local paths: Karpathy-split COCO / Flickr30k retrieval, ImageNet-style
folders; missing paths name the file and the config key before training; `eval.extra_sets`
presets compose and the datamodule appends the sets to val/test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image
from torchvision.datasets import ImageFolder

from tests.conftest import compose_cfg
from vlexp.eval.extra_sets import (
    EvalDataError,
    build_extra_eval_sets,
    coco_set,
    flickr30k_set,
    imagenet_folder_set,
    load_templates,
)
from vlexp.train.datamodule import VLDataModule


def _image(path: Path, colour: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 10), colour).save(path)


def _karpathy(root: Path, name: str, with_filepath: bool) -> list[dict]:
    """A Karpathy-style JSON: 3 test images (one with 6 sentences), 2 val, 1 train."""
    images = []
    for k, split in enumerate(["test", "val", "test", "train", "test", "val"]):
        fname = f"img_{k}.jpg"
        sub = "val2014" if with_filepath else ""
        _image(root / sub / fname, (40 * k, 10, 200 - 30 * k))
        n_sent = 6 if k == 2 else 5
        entry = {
            "filename": fname,
            "split": split,
            "imgid": k,
            "sentences": [{"raw": f" image {k} caption {j} ", "tokens": []} for j in range(n_sent)],
        }
        if with_filepath:
            entry["filepath"] = sub
        images.append(entry)
    (root / name).write_text(json.dumps({"images": images, "dataset": "x"}))
    return images


def test_coco_karpathy_layout(tmp_path):
    _karpathy(tmp_path, "dataset_coco.json", with_filepath=True)
    s = coco_set(root=str(tmp_path))
    assert s.name == "coco" and s.retrieval and s.num_images == 3
    assert s.captions[:5] == [f"image 0 caption {j}" for j in range(5)]
    assert s.captions[5:10] == [f"image 2 caption {j}" for j in range(5)]  # 6th sentence dropped
    assert s.caption_image.tolist() == [0] * 5 + [1] * 5 + [2] * 5
    assert s.images.paths[1] == str(tmp_path / "val2014" / "img_2.jpg")
    item = s.images[1]
    assert item["index"] == 1 and item["label"] == -1 and item["image"].size == (12, 10)
    all_caps = coco_set(root=str(tmp_path), split="val", captions_per_image=None, max_images=1)
    assert all_caps.num_images == 1 and len(all_caps.captions) == 5
    six = coco_set(root=str(tmp_path), captions_per_image=None)
    assert six.caption_image.tolist().count(1) == 6


def test_flickr_layout_with_separate_annotations(tmp_path):
    ann_dir = tmp_path / "karpathy"
    ann_dir.mkdir()
    _karpathy(tmp_path / "flickr30k-images", "unused.json", with_filepath=False)
    (tmp_path / "flickr30k-images" / "unused.json").rename(ann_dir / "dataset_flickr30k.json")
    s = flickr30k_set(
        root=str(tmp_path),
        image_dir="flickr30k-images",
        annotations=str(ann_dir / "dataset_flickr30k.json"),
    )
    assert s.num_images == 3 and s.images.paths[0] == str(
        tmp_path / "flickr30k-images" / "img_0.jpg"
    )


def test_missing_paths_say_what_and_which_key(tmp_path):
    key = "eval.extra_sets.coco"
    with pytest.raises(EvalDataError, match=rf"{key}.root is not set"):
        coco_set()
    with pytest.raises(EvalDataError, match=rf"{key}.root=.*nowhere.*does not exist"):
        coco_set(root=str(tmp_path / "nowhere"))
    with pytest.raises(
        EvalDataError, match=rf"{key}.annotations=.*dataset_coco.json.*no such file"
    ):
        coco_set(root=str(tmp_path))
    _karpathy(tmp_path, "dataset_coco.json", with_filepath=True)
    (tmp_path / "val2014" / "img_4.jpg").unlink()
    with pytest.raises(EvalDataError, match=r"1 of 3 images .* do not exist.*img_4.jpg"):
        coco_set(root=str(tmp_path))
    with pytest.raises(ValueError, match="no image in split 'restval'"):
        coco_set(root=str(tmp_path), split="restval")
    with pytest.raises(EvalDataError, match=r"eval.extra_sets.imagenet.root=.*does not exist"):
        imagenet_folder_set(root=str(tmp_path / "inet"))
    (tmp_path / "inet" / "a").mkdir(parents=True)
    with pytest.raises(EvalDataError, match="one sub-folder per class"):
        imagenet_folder_set(root=str(tmp_path / "inet"))
    _image(tmp_path / "inet" / "a" / "x.png", (1, 2, 3))
    with pytest.raises(
        EvalDataError, match=r"eval.extra_sets.imagenet.templates=.*t.json.*no such file"
    ):
        imagenet_folder_set(root=str(tmp_path / "inet"), templates=str(tmp_path / "t.json"))


@pytest.fixture
def folder(tmp_path) -> Path:
    root = tmp_path / "val"
    rng = np.random.default_rng(0)
    for c, wnid in enumerate(["n02", "n01", "n10_x"]):  # sorted order: n01, n02, n10_x
        for j in range(2 + c):
            _image(root / wnid / f"{j}.JPEG", tuple(int(v) for v in rng.integers(0, 255, 3)))
    (root / "n01" / "notes.txt").write_text("not an image")
    return root


def test_imagenet_folder_matches_torchvision_imagefolder(folder, tmp_path):
    ref = ImageFolder(str(folder))
    s = imagenet_folder_set(root=str(folder))
    assert s.class_names == ["n01", "n02", "n10 x"] and not s.retrieval and s.captions == []
    assert s.images.paths == [p for p, _ in ref.samples]
    assert s.images.labels.tolist() == [c for _, c in ref.samples]
    assert s.templates == ["a photo of a {}."]
    first = s.images[0]
    assert first["label"] == ref.samples[0][1]
    assert np.array_equal(np.asarray(first["image"]), np.asarray(ref[0][0]))


def test_class_name_and_template_files(folder, tmp_path):
    names = {"n01": "goldfish", "n02": "tabby cat", "n10_x": "school bus"}
    (tmp_path / "map.json").write_text(json.dumps(names))
    (tmp_path / "list.json").write_text(json.dumps(["goldfish", "tabby cat", "school bus"]))
    (tmp_path / "cb.json").write_text(
        json.dumps({"imagenet1k": ["goldfish", "tabby cat", "school bus"], "cifar10": ["a"]})
    )
    (tmp_path / "synsets.txt").write_text("n02 tabby cat\nn01 goldfish\nn10_x school bus\n")
    (tmp_path / "lines.txt").write_text("goldfish\ntabby cat\nschool bus\n")
    want = ["goldfish", "tabby cat", "school bus"]
    for spec, key in (
        (tmp_path / "map.json", None),
        (tmp_path / "list.json", None),
        (tmp_path / "cb.json", "imagenet1k"),
        (tmp_path / "synsets.txt", None),
        (tmp_path / "lines.txt", None),
        (want, None),
    ):
        got = imagenet_folder_set(
            root=str(folder),
            class_names=spec if isinstance(spec, list) else str(spec),
            class_names_key=key,
        )
        assert got.class_names == want, spec
    with pytest.raises(ValueError, match="class_names_key"):
        imagenet_folder_set(root=str(folder), class_names=str(tmp_path / "cb.json"))
    (tmp_path / "two.json").write_text(json.dumps(["a", "b"]))
    with pytest.raises(ValueError, match="2 class names for 3 class folders"):
        imagenet_folder_set(root=str(folder), class_names=str(tmp_path / "two.json"))
    (tmp_path / "t.json").write_text(
        json.dumps({"imagenet1k": ["a photo of a {c}.", "itap of a {c}."]})
    )
    assert load_templates(str(tmp_path / "t.json"), templates_key="imagenet1k") == [
        "a photo of a {}.",
        "itap of a {}.",
    ]
    (tmp_path / "t.txt").write_text("a {} photo\n\nart of the {}\n")
    assert load_templates(str(tmp_path / "t.txt")) == ["a {} photo", "art of the {}"]
    with pytest.raises(ValueError, match="exactly one"):
        load_templates(["a photo"])


def test_presets_compose_and_datamodule_appends_sets(folder, tmp_path):
    _karpathy(tmp_path / "coco", "dataset_coco.json", with_filepath=True)
    cfg = compose_cfg(
        [
            "eval=[coco,imagenet_folder]",
            f"eval.extra_sets.coco.root={tmp_path}/coco",
            "eval.extra_sets.coco.stages=[val,test]",
            f"eval.extra_sets.imagenet.root={folder}",
            "data.source.num_train=64",
            "data.source.num_val=8",
            "data.source.num_test=8",
            "data.source.num_test_compositional=4",
            "data.source.image_size=16",
        ]
    )
    assert cfg.eval.ks == [1, 5, 10] and cfg.eval.monitor == "val/mean_R@1"  # eval/default kept
    dm = VLDataModule(
        cfg.data,
        cfg.sampler,
        cfg.filter,
        tokenize=lambda t: {},
        image_size=16,
        image_mean=(0.5,) * 3,
        image_std=(0.5,) * 3,
        extra_eval_sets=cfg.eval.extra_sets,
    )
    dm.setup("fit")
    assert [s.name for s in dm.val_sets] == ["synthetic", "coco"]
    assert [s.name for s in dm.test_sets][-2:] == ["coco", "imagenet"]
    batch = next(iter(dm.val_dataloader()[1]))
    assert batch["image"].shape == (3, 3, 16, 16)


def test_missing_eval_path_fails_at_setup(tmp_path):
    cfg = compose_cfg(["eval=flickr30k", "data.source.num_train=64"])
    dm = VLDataModule(
        cfg.data,
        cfg.sampler,
        cfg.filter,
        tokenize=lambda t: {},
        image_size=16,
        image_mean=(0.5,) * 3,
        image_std=(0.5,) * 3,
        extra_eval_sets=cfg.eval.extra_sets,
    )
    with pytest.raises(EvalDataError, match="eval.extra_sets.flickr30k.root is not set"):
        dm.setup("fit")
    assert dm.splits is None  # nothing was built
    specs = OmegaConf.to_container(cfg.eval.extra_sets)
    specs["flickr30k"]["stages"] = ["train"]
    with pytest.raises(ValueError, match=r"stages=\['train'\]"):
        build_extra_eval_sets(specs)
    assert build_extra_eval_sets({"off": None}) == {"val": [], "test": []}
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['rot'\]"):
        build_extra_eval_sets({"c": {"name": "coco", "rot": "/x"}})


@pytest.mark.slow
def test_train_with_extra_sets(folder, tmp_path, monkeypatch):
    """Through vlexp.train.run.train: a wrong path stops the run before fitting; a right one adds
    test/<set>/... metrics."""
    import vlexp.train.run
    from vlexp.train.run import train

    class Wired(VLDataModule):  # passes eval.extra_sets whether or not run.py does already
        def __init__(self, *args, **kwargs):
            kwargs.setdefault("extra_eval_sets", self.extra)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(vlexp.train.run, "VLDataModule", Wired)
    base = [
        "debug=tiny_run",
        "eval=imagenet_folder",
        "trainer.max_steps=4",
        "trainer.val_check_interval=4",
        "data.source.num_train=128",
        "viz.enabled=false",
        "data.source.image_size=16",
    ]
    Wired.extra = {"imagenet": {"name": "imagenet_folder", "root": str(tmp_path / "missing")}}
    cfg = compose_cfg(
        base + [f"eval.extra_sets.imagenet.root={tmp_path}/missing"], output_dir=tmp_path / "bad"
    )
    with pytest.raises(EvalDataError, match="eval.extra_sets.imagenet.root=.*missing"):
        train(cfg)
    assert not (tmp_path / "bad" / "checkpoints").exists()
    cfg = compose_cfg(
        base + [f"eval.extra_sets.imagenet.root={folder}"], output_dir=tmp_path / "ok"
    )
    Wired.extra = cfg.eval.extra_sets
    train(cfg)
    metrics = json.loads((tmp_path / "ok" / "metrics.json").read_text())
    assert "test/imagenet/zeroshot_top1" in metrics["test"]
