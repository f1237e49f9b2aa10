"""Few-shot linear probes on synthetic Gaussian features."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vlexp.cli.fewshot import main as fewshot_main
from vlexp.eval.fewshot import (
    Probe,
    fewshot_scores,
    fit_probe,
    kshot_folds,
    sample_few_shot,
    scratch_probe,
    scratch_probe_kshot,
    zeroshot_init_probe,
    zeroshot_init_probe_kshot,
    zeroshot_weights,
)
from vlexp.eval.metrics.zeroshot import zeroshot_accuracy

C, D = 8, 32


def _toy(seed: int = 0, n_per_class: int = 40, noise: float = 1.1, text_noise: float = 0.9):
    """Clustered unit features; 'text' class embeddings are noisy copies of the centres."""
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(C, D, generator=g), dim=-1)
    class_emb = F.normalize(centres + text_noise * torch.randn(C, D, generator=g) / D**0.5, dim=-1)

    def draw(n):
        y = torch.arange(C).repeat_interleave(n)
        x = F.normalize(centres[y] + noise * torch.randn(len(y), D, generator=g) / D**0.5, dim=-1)
        return x, y

    return class_emb, draw(n_per_class), draw(n_per_class), draw(n_per_class)


def test_k0_is_exactly_zeroshot_accuracy():
    class_emb, pool, val, test = _toy()
    w0 = zeroshot_weights(class_emb, 30.0)
    res = fewshot_scores(*pool, *val, *test, w0, ks=(0,), seeds=(0, 1))
    expected = zeroshot_accuracy(test[0], test[1], class_emb)["top1"]
    assert res["zeroshot"] == expected
    assert res["zeroshot_init"]["per_seed"][0] == [expected, expected]
    assert np.isnan(res["scratch"]["mean"][0])
    # zero radii leave the zero-shot classifier untouched whatever the data
    W, b = fit_probe(*pool, C, w0, delta=0.0, delta_b=0.0)
    assert Probe(w0, W, b, {}).accuracy(*test) == expected


@pytest.mark.parametrize(("delta", "delta_b"), [(0.5, 0.1), (3.0, 0.0), (0.05, 2.0)])
def test_norm_constraints_hold(delta, delta_b):
    class_emb, pool, _, _ = _toy(seed=1)
    W, b = fit_probe(
        *pool, C, zeroshot_weights(class_emb, 30.0), delta=delta, delta_b=delta_b, steps=200
    )
    assert W.norm().item() <= delta * (1 + 1e-9)
    assert b.norm().item() <= delta_b * (1 + 1e-9)
    if delta <= 0.5:  # small balls: the constraint is active at the optimum
        assert W.norm().item() == pytest.approx(delta, rel=1e-6)


def test_unconstrained_fit_matches_sklearn_logistic_regression():
    from sklearn.linear_model import LogisticRegression

    _, pool, _, test = _toy(seed=2, n_per_class=20)
    x, y = pool
    l2 = 1e-2
    W, b = fit_probe(x, y, C, None, l2=l2, steps=3000)
    ours = torch.softmax(test[0].double() @ W + b, 1).numpy()
    ref = LogisticRegression(C=1.0 / (l2 * len(y)), tol=1e-10, max_iter=10000)
    ref.fit(x.double().numpy(), y.numpy())
    np.testing.assert_allclose(ours, ref.predict_proba(test[0].double().numpy()), atol=2e-4)


def test_zeroshot_init_beats_scratch_at_one_shot():
    gains = []
    for seed in range(4):
        class_emb, pool, val, test = _toy(seed=10 + seed)
        w0 = zeroshot_weights(class_emb, 30.0)
        idx = sample_few_shot(pool[1], 1, seed, C)
        tx, ty = pool[0][idx], pool[1][idx]
        zsi = zeroshot_init_probe(tx, ty, *val, w0, steps=100)
        scr = scratch_probe(tx, ty, *val, C, steps=100)
        gains.append(zsi.accuracy(*test) - scr.accuracy(*test))
    assert np.mean(gains) > 0.05


def test_sampling_is_seeded_and_per_class():
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 0])
    a = sample_few_shot(labels, 2, seed=3, num_classes=3)
    assert torch.equal(a, sample_few_shot(labels, 2, seed=3, num_classes=3))
    assert torch.bincount(labels[a], minlength=3).tolist() == [2, 2, 2]
    assert torch.bincount(labels[sample_few_shot(labels, 5, 0, 3)]).tolist() == [4, 3, 2]


def test_scores_layout():
    class_emb, pool, val, test = _toy(seed=4)
    res = fewshot_scores(
        *pool, *val, *test, zeroshot_weights(class_emb, 30.0), ks=(0, 2), seeds=(0, 1), steps=50
    )
    assert res["ks"] == [0, 2] and len(res["zeroshot_init"]["mean"]) == 2
    assert len(res["scratch"]["per_seed"][1]) == 2
    assert set(res["zeroshot_init"]["hyper"][1][0]) == {"delta_rel", "delta_b_rel", "cv_folds"}
    assert res["zeroshot_init"]["hyper"][1][0]["cv_folds"] == 2  # k = 2: two folds of one shot
    assert res["protocol"] == "kshot" and res["uses_extra_labels"] is False
    assert 0.0 <= res["zeroshot_init"]["mean"][1] <= 1.0
    held = fewshot_scores(
        *pool, *val, *test, zeroshot_weights(class_emb, 30.0), ks=(2,), seeds=(0,), steps=50,
        protocol="heldout",
    )  # fmt: skip
    assert held["protocol"] == "heldout" and held["uses_extra_labels"] is True
    assert set(held["zeroshot_init"]["hyper"][0][0]) == {"delta_rel", "delta_b_rel"}


# ------------------------------------------------------------------ k-shot protocol
def test_kshot_folds_are_stratified_and_disjoint():
    labels = torch.tensor([0, 1, 2] * 5)  # 5 shots of each of 3 classes
    folds = kshot_folds(labels, max_folds=4, seed=3)
    assert len(folds) == 4
    held = torch.cat([va for _, va in folds]).sort().values
    assert torch.equal(held, torch.arange(15))  # every shot validated exactly once
    for tr, va in folds:
        assert not set(tr.tolist()) & set(va.tolist())
        assert len(tr) + len(va) == 15
        assert torch.bincount(labels[va], minlength=3).min() >= 1  # each class held out
        assert torch.bincount(labels[tr], minlength=3).min() >= 1  # and trained on
    assert len(kshot_folds(torch.tensor([0, 0, 1, 1]), max_folds=4)) == 2  # k = 2
    assert kshot_folds(torch.tensor([0, 1, 2])) == []  # k = 1: nothing to hold out
    assert kshot_folds(torch.tensor([0, 0, 1])) == []  # one class has a single shot


def test_kshot_choice_is_the_brute_force_cross_validation_optimum():
    """Re-derive the choice by hand: fit every grid value on each fold, average the
    held-out-fold accuracy (ties: CE), take the best, refit on all shots."""
    class_emb, pool, _, _ = _toy(seed=5)
    w0 = zeroshot_weights(class_emb, 30.0)
    idx = sample_few_shot(pool[1], 4, 0, C)
    x, y = pool[0][idx], pool[1][idx]
    grid_w, grid_b = (0.0, 0.1, 1.0), (0.0, 0.1)
    probe = zeroshot_init_probe_kshot(x, y, w0, grid_w, grid_b, steps=60, max_folds=4)
    scale = w0.double().norm().item()
    scores = {}
    for dw in grid_w:
        for db in grid_b:
            accs, ces = [], []
            for tr, va in kshot_folds(y, 4):
                W, b = fit_probe(x[tr], y[tr], C, w0, dw * scale, db * scale, steps=60)
                logits = x[va].double() @ (w0.double() + W) + b
                accs.append((logits.argmax(1) == y[va]).double().mean().item())
                ces.append(F.cross_entropy(logits, y[va]).item())
            scores[(dw, db)] = (np.mean(accs), -np.mean(ces))
    best = max(scores, key=scores.get)
    assert (probe.hyper["delta_rel"], probe.hyper["delta_b_rel"]) == best
    assert probe.hyper["cv_folds"] == 4
    W, b = fit_probe(x, y, C, w0, best[0] * scale, best[1] * scale, steps=60)
    torch.testing.assert_close(probe.weight, W)


def test_kshot_protocol_uses_no_labels_beyond_the_shots():
    class_emb, pool, val, test = _toy(seed=6)
    w0 = zeroshot_weights(class_emb, 30.0)
    kw = {"ks": (1, 2), "seeds": (0,), "steps": 40, "delta_grid": (0.0, 0.1, 1.0)}
    without = fewshot_scores(*pool, None, None, *test, w0, **kw)
    scrambled = (val[0], val[1][torch.randperm(len(val[1]))])  # wrong labels: must not matter
    assert fewshot_scores(*pool, *scrambled, *test, w0, **kw) == without
    one_shot = without["zeroshot_init"]["hyper"][0][0]
    assert one_shot == {"delta_rel": 0.1, "delta_b_rel": 0.0, "cv_folds": 0.0}  # defaults
    assert without["scratch"]["hyper"][0][0] == {"l2": 1e-2, "cv_folds": 0.0}
    with pytest.raises(ValueError, match="heldout few-shot protocol needs"):
        fewshot_scores(*pool, None, None, *test, w0, protocol="heldout", **kw)
    with pytest.raises(ValueError, match="kshot"):
        fewshot_scores(*pool, *val, *test, w0, protocol="cv", **kw)


def test_zeroshot_init_beats_scratch_at_one_and_two_shots_without_extra_labels():
    gains: dict[int, list[float]] = {1: [], 2: []}
    for seed in range(3):
        class_emb, pool, _, test = _toy(seed=20 + seed)
        w0 = zeroshot_weights(class_emb, 30.0)
        for k in gains:
            idx = sample_few_shot(pool[1], k, seed, C)
            tx, ty = pool[0][idx], pool[1][idx]
            zsi = zeroshot_init_probe_kshot(tx, ty, w0, delta_b_grid=(0.0, 0.03), steps=60)
            scr = scratch_probe_kshot(tx, ty, C, steps=60)
            gains[k].append(zsi.accuracy(*test) - scr.accuracy(*test))
    assert np.mean(gains[1]) > 0.02 and np.mean(gains[2]) > 0.0


def test_cli_refuses_an_unknown_protocol():
    with pytest.raises(SystemExit, match="protocol=cv is not one of"):
        fewshot_main(["ckpt=missing.ckpt", "protocol=cv"])
