"""CLIP_benchmark interop: a vlexp checkpoint evaluated by CLIP_benchmark's own zero-shot
classification and retrieval functions (through vlexp.eval.clip_benchmark) gives the same
numbers as vlexp's metrics on the same tiny local data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from clip_benchmark.datasets.builder import image_captions_collate_fn
from clip_benchmark.datasets.flickr import Flickr
from clip_benchmark.metrics import zeroshot_classification, zeroshot_retrieval
from omegaconf import OmegaConf
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder

from tests.conftest import compose_cfg
from vlexp.cli.clip_benchmark import load_checkpoint, main, register
from vlexp.data.pipeline import ImageCollator
from vlexp.data.synthetic import build_synthetic
from vlexp.encoders import ENCODERS
from vlexp.eval.clip_benchmark import ensure_compat, wrap
from vlexp.eval.extra_sets import flickr30k_set, imagenet_folder_set
from vlexp.eval.metrics.zeroshot import class_embeddings
from vlexp.objectives.base import Objective
from vlexp.train.checkpoints import resolve_checkpoint
from vlexp.train.module import VLModule

N_IMAGES, SIZE = 20, 32
TEMPLATES = ["a {}", "a picture of a {}", "a drawing with a {}"]
PREFIXES = ["", "a picture of ", "an image showing ", "look: ", "here is "]
KS = (1, 5, 10)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """20 synthetic images with unique captions as (a) an ImageNet-style folder by label and
    (b) a Flickr-style retrieval set: Karpathy JSON + CLIP_benchmark's annotation file."""
    root = tmp_path_factory.mktemp("cb")
    src = build_synthetic(
        seed=11, num_train=80, num_val=0, num_test=0, num_test_compositional=0, image_size=SIZE
    )["train"]
    names = src.class_names
    picked, seen = [], set()
    for i in range(len(src)):
        if src.captions[i] not in seen:
            seen.add(src.captions[i])
            picked.append(i)
    picked = picked[:N_IMAGES]
    images, karpathy, lines = root / "images", [], ["image,caption"]
    images.mkdir()
    for k, i in enumerate(picked):
        item = src[i]
        fname = f"{k:03d}.jpg"
        item["image"].save(images / fname, quality=95)
        folder = root / "folder" / names[item["label"]]
        folder.mkdir(parents=True, exist_ok=True)
        item["image"].save(folder / fname, quality=95)
        caps = [p + item["caption"] for p in PREFIXES]
        karpathy.append(
            {"filename": fname, "split": "test", "sentences": [{"raw": c} for c in caps]}
        )
        lines += [f"{fname},{c}" for c in caps]
    (root / "dataset_flickr30k.json").write_text(json.dumps({"images": karpathy}))
    (root / "flickr30k_test_karpathy.txt").write_text("\n".join(lines) + "\n")
    return {
        "root": root,
        "images": images,
        "folder": root / "folder",
        "ann": root / "flickr30k_test_karpathy.txt",
        "json": root / "dataset_flickr30k.json",
    }


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> dict[str, Path]:
    """A random-init tiny vlexp model saved as a run would save it."""
    run = tmp_path_factory.mktemp("run")
    cfg = compose_cfg(["debug=tiny_run", f"data.source.image_size={SIZE}"])
    torch.manual_seed(0)
    model = ENCODERS.build(OmegaConf.to_container(cfg.encoder, resolve=True))
    (run / "checkpoints").mkdir()
    (run / ".hydra").mkdir()
    ckpt = run / "checkpoints" / "last.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, ckpt)
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    return {"run": run, "ckpt": ckpt, "model": model}


@torch.no_grad()
def _image_embeddings(model, eval_set, transform) -> tuple[torch.Tensor, torch.Tensor]:
    loader = DataLoader(eval_set.images, batch_size=8, collate_fn=ImageCollator(transform))
    embs, labels = [], []
    for batch in loader:
        embs.append(model.encode_image(batch["image"]))
        labels.append(batch["label"])
    return torch.cat(embs), torch.cat(labels)


def _rank_bounds(scores: torch.Tensor, positive: torch.Tensor, eps: float = 1e-5):
    """Per query, the fewest and the most wrong candidates that can rank above its best true
    one under any tie-breaking (scores within ``eps`` count as tied: float noise)."""
    best_true = scores.masked_fill(~positive, float("-inf")).max(1, keepdim=True).values
    wrong = ~positive
    fewest = ((scores > best_true + eps) & wrong).sum(1)
    most = ((scores >= best_true - eps) & wrong).sum(1)
    return fewest, most


def _agree_up_to_ties(ours: float, theirs: float, fewest, most, k: int) -> None:
    hi, lo = (fewest < k).float().mean().item(), (most < k).float().mean().item()
    assert lo - 1e-6 <= ours <= hi + 1e-6 and lo - 1e-6 <= theirs <= hi + 1e-6
    if lo == hi:  # no tie can matter at this k: the numbers must be identical
        assert ours == pytest.approx(theirs, abs=1e-6)


def test_loader_rebuilds_the_checkpoint(checkpoint, data):
    model, transform, tokenizer = load_checkpoint("vlexp", str(checkpoint["ckpt"]))
    ref = checkpoint["model"].eval()
    for k, v in ref.state_dict().items():
        assert torch.equal(model.model.state_dict()[k], v), k
    assert resolve_checkpoint(checkpoint["run"]) == checkpoint["ckpt"]
    tokens = tokenizer(["a red circle", "two blue squares"])
    assert tokens.shape == (2, 2, ref.context_length) and tokens.dtype == torch.long
    tok = ref.tokenize(["a red circle", "two blue squares"])
    want = ref.encode_text(tok["input_ids"], tok["attention_mask"])
    torch.testing.assert_close(model.encode_text(tokens), want)
    torch.testing.assert_close(model.encode_text(tokens[:, 0]), want)  # mask from the pad id
    image = ImageFolder(str(data["folder"]), transform=transform)[0][0]
    assert image.shape == (3, SIZE, SIZE)
    torch.testing.assert_close(model.encode_image(image[None]), ref.encode_image(image[None]))
    with pytest.raises(FileNotFoundError, match="no run config"):
        load_checkpoint(str(data["root"] / "nope.yaml"), str(data["ann"]))


def test_zeroshot_classification_agrees(checkpoint, data):
    ensure_compat()  # clip-benchmark 1.6.2's accuracy() fails on NumPy >= 2.4 (float(array))
    model, transform, tokenizer = wrap(checkpoint["model"])
    # CLIP_benchmark: torchvision ImageFolder + its classifier over {c} templates
    ds = ImageFolder(str(data["folder"]), transform=transform)
    assert len(ds.classes) >= 5 and len(ds) == N_IMAGES
    cb = zeroshot_classification.evaluate(
        model,
        DataLoader(ds, batch_size=7),
        tokenizer,
        ds.classes,
        [t.replace("{}", "{c}") for t in TEMPLATES],
        device="cpu",
        amp=False,
    )
    # vlexp: its ImageNet-folder set and the module's evaluation
    eval_set = imagenet_folder_set(root=str(data["folder"]), templates=TEMPLATES)
    assert eval_set.class_names == ds.classes
    module = VLModule(checkpoint["model"], Objective()).eval()
    emb, labels = _image_embeddings(checkpoint["model"], eval_set, transform)
    assert labels.tolist() == [c for _, c in ds.samples]
    ours = module.evaluate_set(eval_set, emb, labels)
    cls = class_embeddings(
        checkpoint["model"], eval_set.class_names, TEMPLATES, torch.device("cpu")
    )
    fewest, most = _rank_bounds(emb @ cls.T, torch.nn.functional.one_hot(labels, len(cls)).bool())
    assert torch.equal(fewest, most)  # this set has no near-ties: exact agreement expected
    assert ours["zeroshot_top1"] == pytest.approx(cb["acc1"], abs=1e-6)  # float32 means
    assert ours["zeroshot_top5"] == pytest.approx(cb["acc5"], abs=1e-6)


def test_zeroshot_retrieval_agrees(checkpoint, data):
    model, transform, tokenizer = wrap(checkpoint["model"])
    ds = Flickr(root=str(data["images"]), ann_file=str(data["ann"]), transform=transform)
    loader = DataLoader(ds, batch_size=6, collate_fn=image_captions_collate_fn)
    cb = zeroshot_retrieval.evaluate(
        model, loader, tokenizer, device="cpu", amp=False, recall_k_list=list(KS)
    )
    eval_set = flickr30k_set(root=str(data["images"]), annotations=str(data["json"]))
    assert eval_set.num_images == N_IMAGES and len(eval_set.captions) == 5 * N_IMAGES
    module = VLModule(checkpoint["model"], Objective(), eval_ks=KS).eval()
    emb, labels = _image_embeddings(checkpoint["model"], eval_set, transform)
    ours = module.evaluate_set(eval_set, emb, labels)
    text = module.encode_captions(eval_set.captions)
    owner = torch.as_tensor(eval_set.caption_image)
    positive = owner[:, None] == torch.arange(N_IMAGES)[None, :]  # (captions, images)
    t2i = _rank_bounds(text @ emb.T, positive)
    i2t = _rank_bounds(emb @ text.T, positive.T)
    for k in KS:  # CLIP_benchmark's "image retrieval" = text -> image (vlexp t2i)
        _agree_up_to_ties(ours[f"t2i_R@{k}"], cb[f"image_retrieval_recall@{k}"], *t2i, k)
        _agree_up_to_ties(ours[f"i2t_R@{k}"], cb[f"text_retrieval_recall@{k}"], *i2t, k)
    assert 0 < ours["t2i_R@10"] < 1  # not a degenerate all-or-nothing comparison


def test_clip_benchmark_cli_evaluates_a_vlexp_checkpoint(checkpoint, data, tmp_path):
    import clip_benchmark.models as cbm

    register()
    assert "vlexp" in cbm.MODEL_TYPES
    out = tmp_path / "cb.json"
    main(
        [
            "eval",
            "--dataset",
            "flickr30k",
            "--dataset_root",
            str(data["images"]),
            "--annotation_file",
            str(data["ann"]),
            "--task",
            "zeroshot_retrieval",
            "--pretrained",
            str(checkpoint["run"]),
            "--recall_k",
            "1",
            "5",
            "--no_amp",
            "--num_workers",
            "0",
            "--batch_size",
            "6",
            "--output",
            str(out),
            "--quiet",
        ]
    )
    dump = json.loads(out.read_text())
    model, transform, tokenizer = wrap(checkpoint["model"])
    ds = Flickr(root=str(data["images"]), ann_file=str(data["ann"]), transform=transform)
    direct = zeroshot_retrieval.evaluate(
        model,
        DataLoader(ds, batch_size=6, collate_fn=image_captions_collate_fn),
        tokenizer,
        device="cpu",
        amp=False,
        recall_k_list=[1, 5],
    )
    assert dump["task"] == "zeroshot_retrieval"
    assert dump["metrics"] == pytest.approx(direct, abs=1e-9)
    assert np.isfinite(list(dump["metrics"].values())).all()
