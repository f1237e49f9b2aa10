"""Fine-grained accuracy: hand-built embeddings with known answers, chance, eval-set wiring."""

import numpy as np
import pytest
import torch

from vlexp.data.eval_set import EvalSet
from vlexp.eval.metrics.finegrained import (
    finegrained_chance,
    finegrained_scores,
    flatten_distractors,
)
from vlexp.train.report import chance_levels, metrics_rows


def _unit(*xs):
    v = torch.tensor(xs, dtype=torch.float32)
    return v / v.norm()


def test_known_answers_by_hand():
    # images are the axes of R^3; image i's true caption scores 0.8 with it
    img = torch.eye(3)
    true = torch.stack([_unit(0.8, 0.6, 0), _unit(0, 0.8, 0.6), _unit(0.6, 0, 0.8)])
    # image 0: distractors score 0.6 and 0.0 -> rank 1 (correct)
    # image 1: distractors score 0.9 and 0.5 -> rank 2 (wrong)
    # image 2: distractors score 0.99, 0.9, 0.85 -> rank 4 (wrong)
    dist = torch.stack(
        [
            _unit(0.6, 0.8, 0),
            _unit(0, 1, 0),
            _unit(0.436, 0.9, 0),
            _unit(0.866, 0.5, 0),
            _unit(0.141, 0, 0.99),
            _unit(0.436, 0, 0.9),
            _unit(0.527, 0, 0.85),
        ]
    )
    owner = np.array([0, 0, 1, 1, 2, 2, 2])
    out = finegrained_scores(img, true, dist, owner)
    assert out["finegrained_acc"] == pytest.approx(1 / 3)
    assert out["finegrained_rank"] == pytest.approx((1 + 2 + 4) / 3)


def test_ties_count_against_the_true_caption():
    img = torch.eye(2)
    true = torch.eye(2)
    dist = torch.eye(2)  # each image has one distractor identical to its true caption
    out = finegrained_scores(img, true, dist, torch.tensor([0, 1]))
    assert out == {"finegrained_acc": 0.0, "finegrained_rank": 2.0}


def test_images_without_distractors_are_left_out():
    img = torch.eye(3)
    true = torch.eye(3)
    # only image 2 has distractors (one loses, one wins) -> acc 0, rank 2 on that image alone
    dist = torch.stack([_unit(0, 0, 1), _unit(1, 0, 0)])
    out = finegrained_scores(img, true, dist, [2, 2])
    assert out["finegrained_acc"] == 0.0 and out["finegrained_rank"] == 2.0
    with pytest.raises(ValueError, match="no image has a distractor"):
        finegrained_scores(img, true, torch.zeros(0, 3), np.zeros(0, dtype=np.int64))


def test_shape_errors_are_explained():
    img = torch.eye(2)
    with pytest.raises(ValueError, match="one caption embedding per image"):
        finegrained_scores(img, torch.eye(3), torch.eye(2), [0, 1])
    with pytest.raises(ValueError, match="one image index per distractor"):
        finegrained_scores(img, torch.eye(2), torch.eye(2), [0])
    with pytest.raises(ValueError, match=r"must lie in \[0, 2\)"):
        finegrained_scores(img, torch.eye(2), torch.eye(2), [0, 5])


def test_chance_formulas_and_monte_carlo():
    assert finegrained_chance([4, 4]) == {"finegrained_acc": 0.2, "finegrained_rank": 3.0}
    mixed = finegrained_chance([1, 3, 0])  # the image without distractors is left out
    assert mixed["finegrained_acc"] == pytest.approx((1 / 2 + 1 / 4) / 2)
    assert mixed["finegrained_rank"] == pytest.approx((1.5 + 2.5) / 2)
    # random embeddings reach the chance level (20000 images, 4 distractors each)
    g = torch.Generator().manual_seed(0)
    n, k, d = 20000, 4, 16
    img = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=1)
    true = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=1)
    dist = torch.nn.functional.normalize(torch.randn(n * k, d, generator=g), dim=1)
    out = finegrained_scores(img, true, dist, np.repeat(np.arange(n), k))
    assert out["finegrained_acc"] == pytest.approx(0.2, abs=0.01)
    assert out["finegrained_rank"] == pytest.approx(3.0, abs=0.03)


def test_flatten_distractors():
    flat, owner = flatten_distractors([["a", "b"], [], ["c"]])
    assert flat == ["a", "b", "c"] and owner.tolist() == [0, 0, 2]


class _Images(torch.utils.data.Dataset):
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {"image": torch.zeros(3, 4, 4), "label": -1, "index": i}


def _set(distractors, caption_image=(1, 0), captions=("true b", "true a")):
    return EvalSet(
        "fg",
        _Images(2),
        list(captions),
        np.asarray(caption_image),
        retrieval=False,
        distractors=distractors,
    )


def test_eval_set_checks_and_chance_row():
    with pytest.raises(ValueError, match="one list per image"):
        _set([["x"]])
    with pytest.raises(ValueError, match="exactly one true caption per image"):
        _set([["x"], ["y"]], caption_image=(0, 0))
    s = _set([["x", "y", "z", "w"], ["u", "v", "s", "t"]])
    chance = chance_levels(s, (1,))
    assert chance["finegrained_acc"] == pytest.approx(0.2)
    rows = metrics_rows(
        {"test/fg/finegrained_acc": 0.5, "test/fg/finegrained_rank": 1.5}, [s], "test", (1,)
    )
    assert rows == [
        {
            "set": "fg",
            "metric": "finegrained_acc",
            "value": 0.5,
            "chance": pytest.approx(0.2),
            "x_chance": pytest.approx(2.5),
        }
    ]


def test_module_evaluate_set_maps_true_captions_by_caption_image():
    """VLModule.evaluate_set: caption j belongs to image caption_image[j], not image j."""
    from vlexp.train.module import VLModule

    emb = {  # image 0 = e0, image 1 = e1
        "true a": [1.0, 0.0],
        "true b": [0.0, 1.0],
        "near a": [0.6, 0.8],
        "far a": [-1.0, 0.0],  # image 0: wins against both
        "beats b": [0.0, 1.0],  # image 1: tie -> loses
    }
    module = VLModule.__new__(VLModule)  # only evaluate_set's own logic is under test
    torch.nn.Module.__init__(module)
    module.eval_ks, module.eval_chunk_size = (1,), 16
    module.encode_captions = lambda caps: torch.tensor([emb[c] for c in caps])
    s = _set([["near a", "far a"], ["beats b"]])
    out = module.evaluate_set(s, torch.eye(2), torch.full((2,), -1))
    assert out == {"finegrained_acc": 0.5, "finegrained_rank": 1.5}
