"""Concept distillation: targets, losses, the teacher-target cache, the objective."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vlexp.objectives import OBJECTIVES
from vlexp.objectives.concepts.objective import distillation_loss, teacher_targets
from vlexp.objectives.concepts.targets import TargetStore, load_or_compute_targets
from vlexp.objectives.concepts.teachers import SmallCNN, build_teacher, save_synthetic_teacher
from vlexp.objectives.distributed import gather_features

NUM_CONCEPTS = 5


class _Pairs:
    """A tiny pair source: random-colour images with captions."""

    def __init__(self, n: int, seed: int = 0, size: int = 24) -> None:
        rng = np.random.default_rng(seed)
        self.images = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]
        self._captions = [f"pair {seed} {i}" for i in range(n)]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"image": Image.fromarray(self.images[i]), "caption": self._captions[i], "index": i}

    @property
    def captions(self) -> list[str]:
        return self._captions


@pytest.fixture
def teacher_file(tmp_path):
    torch.manual_seed(0)
    model = SmallCNN(NUM_CONCEPTS, width=4).eval()
    path = tmp_path / "teacher.pt"
    save_synthetic_teacher(
        model, [f"c{i}" for i in range(NUM_CONCEPTS)], 16, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), path
    )
    return str(path)


def _objective(teacher_file, multilabel=None, **kw):
    teacher = {"name": "synthetic", "weights": teacher_file, "multilabel": multilabel}
    cfg = {"name": "concepts", "teacher": teacher, "progress": False, **kw}
    return OBJECTIVES.build(cfg, embed_dim=8)


# ------------------------------------------------------------------ targets and losses
def test_softmax_targets_with_top_k_and_temperature():
    z = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    p = teacher_targets(z, multilabel=False, temperature=2.0, top_k=2)
    e = torch.exp(torch.tensor([1.0, 0.5]))
    torch.testing.assert_close(p, torch.tensor([[e[0] / e.sum(), e[1] / e.sum(), 0.0, 0.0]]))
    full = teacher_targets(z, multilabel=False)
    torch.testing.assert_close(full, torch.softmax(z, 1))


def test_multilabel_targets_are_sigmoids_zeroed_outside_top_k():
    z = torch.tensor([[2.0, -1.0, 0.5]])
    p = teacher_targets(z, multilabel=True, top_k=2)
    torch.testing.assert_close(
        p, torch.tensor([[torch.sigmoid(torch.tensor(2.0)), 0.0, torch.sigmoid(torch.tensor(0.5))]])
    )


def test_losses_match_torch_references():
    g = torch.Generator().manual_seed(0)
    student = torch.randn(6, 9, generator=g)
    p = torch.softmax(torch.randn(6, 9, generator=g), 1)
    p[0] = F.one_hot(torch.tensor(2), 9).float()  # zeros in the target are fine
    log_q = F.log_softmax(student, 1)
    torch.testing.assert_close(
        distillation_loss(student, p, "kl"), F.kl_div(log_q, p, reduction="batchmean")
    )
    torch.testing.assert_close(
        distillation_loss(student, p, "soft_ce"), F.cross_entropy(student, p)
    )
    probs = torch.rand(6, 9, generator=g)
    torch.testing.assert_close(
        distillation_loss(student, probs, "bce"),
        F.binary_cross_entropy(torch.sigmoid(student), probs, reduction="sum") / 6,
    )
    with pytest.raises(ValueError, match="objective.loss"):
        distillation_loss(student, p, "mse")


def test_target_store_topk_lookup():
    z = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 4.0]])
    dense = TargetStore.from_logits(z)
    torch.testing.assert_close(dense.lookup(torch.tensor([1, 0])), z[[1, 0]])
    sparse = TargetStore.from_logits(z, store_topk=2)
    inf = float("-inf")
    torch.testing.assert_close(
        sparse.lookup(torch.tensor([0, 1])), torch.tensor([[3.0, inf, 2.0], [inf, 5.0, 4.0]])
    )
    with pytest.raises(IndexError, match="another training set"):
        dense.lookup(torch.tensor([2]))


# ------------------------------------------------------------------ cache
def test_cache_written_once_then_loaded(teacher_file, tmp_path, monkeypatch):
    data = _Pairs(10)
    teacher = build_teacher("synthetic", weights=teacher_file)
    store, path = load_or_compute_targets(
        teacher, data, tmp_path / "cache", batch_size=4, progress=False
    )
    assert (path / "meta.json").exists() and (path / "logits.npy").exists()
    tf = teacher.pil_transform()
    expected = teacher.logits(torch.stack([tf(data[i]["image"]) for i in range(10)]))
    torch.testing.assert_close(store.lookup(torch.arange(10)), expected, rtol=1e-3, atol=1e-3)

    def fail(*a, **k):
        raise AssertionError("teacher run although the cache exists")

    monkeypatch.setattr(teacher, "logits", fail)
    again, path2 = load_or_compute_targets(teacher, data, tmp_path / "cache", progress=False)
    assert path2 == path
    np.testing.assert_array_equal(np.asarray(again.store.logits), np.asarray(store.store.logits))
    # another dataset (other captions) or other preprocessing is another cache entry
    with pytest.raises(AssertionError, match="teacher run"):
        load_or_compute_targets(teacher, _Pairs(10, seed=1), tmp_path / "cache", progress=False)
    teacher.input_size = 20
    with pytest.raises(AssertionError, match="teacher run"):
        load_or_compute_targets(teacher, data, tmp_path / "cache", progress=False)


def test_setup_then_forward_uses_cached_targets(teacher_file, tmp_path):
    data = _Pairs(12)
    obj = _objective(teacher_file)
    obj.setup(data, cache_dir=str(tmp_path))
    assert obj.loss_name == "bce"  # synthetic teachers are multi-label
    g = torch.Generator().manual_seed(0)
    img = F.normalize(torch.randn(4, 8, generator=g), dim=-1).requires_grad_()
    txt = F.normalize(torch.randn(4, 8, generator=g), dim=-1)
    index = torch.tensor([7, 0, 11, 3])
    out = obj(gather_features(img, txt), torch.tensor(10.0), {"index": index}, 0.0)
    targets = torch.sigmoid(obj.targets.lookup(index))
    expected = F.binary_cross_entropy_with_logits(obj.image_head(img), targets, reduction="sum") / 4
    torch.testing.assert_close(out.loss, expected)
    out.loss.backward()
    assert img.grad is not None and obj.image_head.weight.grad is not None
    fit = {"loss_image", "excess_image", "top1_image", "labels_image", "scale_image"}
    assert set(out.components) == fit
    assert all(not p.requires_grad for p in obj.teacher.model.parameters())
    assert not any(k.startswith("teacher") for k in obj.state_dict())  # never checkpointed


def test_text_head_and_weights(teacher_file):
    obj = _objective(teacher_file, loss="soft_ce", image_weight=0.5, text_weight=2.0)
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(6, NUM_CONCEPTS, generator=g).half().float()  # stored as float16
    obj.set_targets(logits)
    img = F.normalize(torch.randn(3, 8, generator=g), dim=-1)
    txt = F.normalize(torch.randn(3, 8, generator=g), dim=-1)
    idx = torch.tensor([5, 1, 2])
    out = obj(gather_features(img, txt), torch.tensor(10.0), {"index": idx}, 0.0)
    p = torch.sigmoid(logits[idx])  # multi-label teacher, soft CE over the sigmoid scores
    ce_i = -(p * F.log_softmax(obj.image_head(img), 1)).sum(1).mean()
    ce_t = -(p * F.log_softmax(obj.text_head(txt), 1)).sum(1).mean()
    torch.testing.assert_close(out.loss, 0.5 * ce_i + 2.0 * ce_t)


def test_on_the_fly_matches_teacher_on_the_same_pixels(teacher_file):
    obj = _objective(
        teacher_file, on_the_fly=True, image_mean=[0.4, 0.4, 0.4], image_std=[0.2, 0.2, 0.2]
    )
    obj.setup(_Pairs(3), cache_dir=None)  # nothing to precompute
    assert obj.targets is None
    pixels = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    batch = {"image": (pixels - 0.4) / 0.2}
    got = obj.teacher_logits(batch, torch.device("cpu"))
    torch.testing.assert_close(got, obj.teacher.logits((pixels - 0.5) / 0.25), rtol=1e-4, atol=1e-5)


def test_unprepared_targets_explain_what_to_do(teacher_file):
    obj = _objective(teacher_file)
    feats = gather_features(torch.eye(2, 8), torch.eye(2, 8))
    with pytest.raises(RuntimeError, match="on_the_fly=true"):
        obj(feats, torch.tensor(1.0), {"index": torch.tensor([0, 1])}, 0.0)
    with pytest.raises(ValueError, match="objective.loss"):
        _objective(teacher_file, loss="l2")


def test_heads_learn_the_teacher(teacher_file):
    """A few optimiser steps on fixed embeddings reduce the KL to the teacher."""
    obj = _objective(teacher_file, loss="kl", multilabel=False)
    g = torch.Generator().manual_seed(3)
    emb = F.normalize(torch.randn(32, 8, generator=g), dim=-1)
    mixing = torch.randn(8, NUM_CONCEPTS, generator=g)
    obj.set_targets(3 * emb @ mixing)  # a teacher a linear head can match exactly
    feats = gather_features(emb, emb)
    batch = {"index": torch.arange(32)}
    opt = torch.optim.Adam(obj.parameters(), lr=0.05)
    first = None
    for _ in range(100):
        loss = obj(feats, torch.tensor(1.0), batch, 0.0).loss
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.2 * first
