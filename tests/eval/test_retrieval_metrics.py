"""Retrieval and zero-shot metrics on hand-built embeddings with known answers."""

import torch

from vlexp.eval.metrics.retrieval import retrieval_chance, retrieval_recall
from vlexp.eval.metrics.zeroshot import zeroshot_accuracy


def _onehots(idx, d):
    return torch.eye(d)[torch.as_tensor(idx)]


def test_perfect_and_shifted_retrieval():
    img = torch.eye(4)
    # captions 0..3 point at images 0..3, perfect
    r = retrieval_recall(img, torch.eye(4), torch.arange(4), ks=(1, 2))
    assert r == {"i2t_R@1": 1.0, "t2i_R@1": 1.0, "i2t_R@2": 1.0, "t2i_R@2": 1.0}
    # caption j is most similar to image (j+1)%4 and second-most to its own image
    txt = torch.stack([0.6 * _onehots((j + 1) % 4, 4) + 0.4 * _onehots(j, 4) for j in range(4)])
    r = retrieval_recall(img, txt, torch.arange(4), ks=(1, 2), chunk_size=3)
    assert r["t2i_R@1"] == 0.0 and r["t2i_R@2"] == 1.0
    assert r["i2t_R@1"] == 0.0 and r["i2t_R@2"] == 1.0


def test_multiple_captions_per_image():
    img = torch.eye(3)
    # image 0 has captions 0 (wrong direction) and 1 (right); image 1 caption 2; image 2 caption 3
    txt = torch.stack([_onehots(2, 3), _onehots(0, 3), _onehots(1, 3), _onehots(0, 3) * 0.9])
    cap_img = torch.tensor([0, 0, 1, 2])
    r = retrieval_recall(img, txt, cap_img, ks=(1,), chunk_size=2)
    # i2t: image0 best own caption=1 (score 1) vs caption 3 (0.9): hit; image1: caption 2 hit;
    # image2: own caption 3 scores 0, caption 0 scores 1 -> miss
    assert abs(r["i2t_R@1"] - 2 / 3) < 1e-6
    # t2i: caption0 -> image2 (miss), caption1 -> image0 hit, caption2 -> image1 hit,
    # caption3 -> image0 but its image is 2 -> miss
    assert abs(r["t2i_R@1"] - 0.5) < 1e-6


def test_chance_levels():
    c = retrieval_chance(100, 500, 5, 1)
    assert abs(c["t2i_R@1"] - 0.01) < 1e-9
    assert abs(c["i2t_R@1"] - 0.01) < 1e-9  # 5 relevant of 500
    c = retrieval_chance(10, 10, 1, 5)
    assert abs(c["i2t_R@5"] - 0.5) < 1e-9


def test_zeroshot_accuracy():
    cls = torch.eye(3)
    img = torch.tensor([[1.0, 0.1, 0], [0, 0.2, 1.0], [0.9, 1.0, 0]])
    acc = zeroshot_accuracy(img, torch.tensor([0, 2, 0]), cls, ks=(1, 2))
    assert abs(acc["top1"] - 2 / 3) < 1e-6 and acc["top2"] == 1.0
    acc = zeroshot_accuracy(img, torch.tensor([0, -1, -1]), cls, ks=(1,))
    assert acc["top1"] == 1.0  # unlabelled images are ignored
