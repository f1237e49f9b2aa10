"""Few-shot linear probes on frozen image embeddings (DiHT's zero-shot-initialised probe).

The zero-shot-initialised probe is ``logits = x^T (W0 + W) + b`` with ``W0`` the zero-shot
classifier and ``||W||``, ``||b||`` bounded (projected accelerated gradient descent,
:func:`fit_probe`); the scratch probe is L2-regularised logistic regression. Grid values
are chosen from the k shots alone (``protocol=kshot``, the default, by stratified folds)
or on a held-out set (``heldout``, an upper bound). The command is ``vlexp fewshot``.
Formulas and the choice rules: docs/DESIGN.md ("Few-shot probes").
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

DELTA_GRID = (0.0, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
DELTA_B_GRID = (0.0, 0.01, 0.03, 0.1, 0.3)
L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1)
PROTOCOLS = ("kshot", "heldout")
KSHOT_MAX_FOLDS = 4
KSHOT_DEFAULTS = {"delta_rel": 0.1, "delta_b_rel": 0.0, "l2": 1e-2}
"""Fixed hyper-parameters of the ``kshot`` protocol at one shot per class (no shot can be
held out): vlexp's choice, not tuned on any evaluation data."""


@dataclass
class Probe:
    """A fitted linear probe: ``logits = x @ (w0 + weight) + bias``."""

    w0: torch.Tensor | None  # (D, C) or None (scratch)
    weight: torch.Tensor  # (D, C)
    bias: torch.Tensor  # (C,)
    hyper: dict[str, float]
    val_accuracy: float = float("nan")

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.weight.dtype)
        z = x @ self.weight + self.bias
        return z if self.w0 is None else x @ self.w0.to(z.dtype) + z

    def accuracy(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """Top-1 accuracy on features ``x`` with labels ``y``."""
        return accuracy(self.logits(x), y)


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy (ties resolved as ``topk`` does, like zero-shot evaluation)."""
    if len(y) == 0:
        return float("nan")
    return (logits.topk(1, dim=1).indices[:, 0] == y.to(logits.device)).float().mean().item()


def zeroshot_weights(class_emb: torch.Tensor, logit_scale: float) -> torch.Tensor:
    """The zero-shot classifier ``W0 = logit_scale * class_emb^T`` of shape (D, C)."""
    return float(logit_scale) * class_emb.T


def sample_few_shot(labels: torch.Tensor, k: int, seed: int, num_classes: int) -> torch.Tensor:
    """Indices of ``k`` examples per class (all of a class if it has fewer), seeded."""
    g = torch.Generator().manual_seed(int(seed))
    labels = labels.cpu()
    picked = []
    for c in range(num_classes):
        idx = torch.nonzero(labels == c).flatten()
        picked.append(idx[torch.randperm(len(idx), generator=g)[:k]])
    out = torch.cat(picked) if picked else torch.zeros(0, dtype=torch.long)
    return out.sort().values


def _project(t: torch.Tensor, radius: float | None) -> torch.Tensor:
    if radius is None:
        return t
    norm = t.norm()
    return t * (radius / norm) if norm > radius else t


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch ops on one thread: the probe's matrices are tiny, and on a busy machine
    multi-threaded small ops spend far longer synchronising than computing (100x seen)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def fit_probe(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    w0: torch.Tensor | None = None,
    delta: float | None = None,
    delta_b: float | None = None,
    l2: float = 0.0,
    steps: int = 300,
    tol: float = 1e-9,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimise ``mean CE(x @ (w0 + W) + b) + l2/2 ||W||^2`` s.t. ``||W|| <= delta``,
    ``||b|| <= delta_b`` (``None`` = unconstrained), starting from ``W = 0, b = 0``.

    Accelerated projected gradient (FISTA) with backtracking (the step starts at ``1 / L``,
    ``L = sigma_max([x, 1])^2 / (2 n) + l2`` bounding the curvature, and may grow by 25 %
    per iteration while the sufficient-decrease test holds, so saturated, confident
    logits do not slow it down) and a restart of the momentum whenever the objective
    rises. Stops after ``steps`` iterations or when an iteration moves less than ``tol``
    relative to the iterate. Returns ``(W, b)`` in float64.
    """
    with _one_thread():
        return _fit_probe(x, y, num_classes, w0, delta, delta_b, l2, steps, tol)


def _fit_probe(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    w0: torch.Tensor | None,
    delta: float | None,
    delta_b: float | None,
    l2: float,
    steps: int,
    tol: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.double()
    y = y.long().to(x.device)
    n, d = x.shape
    weight = torch.zeros(d, num_classes, dtype=x.dtype, device=x.device)
    bias = torch.zeros(num_classes, dtype=x.dtype, device=x.device)
    if n == 0 or (delta == 0 and delta_b == 0) or steps <= 0:
        return weight, bias
    base = x @ w0.double().to(x.device) if w0 is not None else torch.zeros_like(weight[:1])
    onehot = torch.nn.functional.one_hot(y, num_classes).to(x.dtype)

    def value(w: torch.Tensor, b: torch.Tensor) -> float:
        logits = base + x @ w + b
        ce = (torch.logsumexp(logits, 1) - (logits * onehot).sum(1)).mean()
        return (ce + 0.5 * l2 * (w * w).sum()).item()

    def grad(w: torch.Tensor, b: torch.Tensor) -> tuple[float, torch.Tensor, torch.Tensor]:
        logits = base + x @ w + b
        ce = (torch.logsumexp(logits, 1) - (logits * onehot).sum(1)).mean()
        g = (torch.softmax(logits, dim=1) - onehot) / n
        return (ce + 0.5 * l2 * (w * w).sum()).item(), x.T @ g + l2 * w, g.sum(0)

    aug = torch.cat([x, torch.ones(n, 1, dtype=x.dtype, device=x.device)], 1)
    step = 1.0 / (torch.linalg.matrix_norm(aug, ord=2).item() ** 2 / (2 * n) + l2)
    w_prev, b_prev, f_prev = weight, bias, value(weight, bias)
    v_w, v_b, t = weight, bias, 1.0
    for _ in range(steps):
        f_v, g_w, g_b = grad(v_w, v_b)
        for _ in range(60):  # backtracking: halve until the quadratic upper bound holds
            w_new = _project(v_w - step * g_w, delta)
            b_new = _project(v_b - step * g_b, delta_b)
            d_w, d_b = w_new - v_w, b_new - v_b
            sq = (d_w * d_w).sum().item() + (d_b * d_b).sum().item()
            f_new = value(w_new, b_new)
            bound = f_v + (g_w * d_w).sum().item() + (g_b * d_b).sum().item() + sq / (2 * step)
            if f_new <= bound + 1e-12 * max(1.0, abs(f_v)):
                break
            step *= 0.5
        moved = ((w_new - w_prev).norm() + (b_new - b_prev).norm()).item()
        size = (w_new.norm() + b_new.norm()).item()
        if f_new > f_prev:  # momentum overshoot: restart from the last iterate
            t, v_w, v_b = 1.0, w_prev, b_prev
            step *= 0.5
            continue
        t_new = (1 + math.sqrt(1 + 4 * t * t)) / 2
        mom = (t - 1) / t_new
        v_w, v_b = w_new + mom * (w_new - w_prev), b_new + mom * (b_new - b_prev)
        w_prev, b_prev, f_prev, t = w_new, b_new, f_new, t_new
        step *= 1.25
        if moved <= tol * max(1.0, size):
            break
    return w_prev, b_prev


def _val_key(probe: Probe, val_x: torch.Tensor, val_y: torch.Tensor) -> tuple[float, float]:
    with _one_thread():
        logits = probe.logits(val_x)
        ce = torch.nn.functional.cross_entropy(logits, val_y.to(logits.device)).item()
        return accuracy(logits, val_y), -ce


ProbeFit = Callable[[dict[str, float], torch.Tensor, torch.Tensor], Probe]


def _zeroshot_init_fit(w0: torch.Tensor, steps: int) -> ProbeFit:
    """Fit a zero-shot-initialised probe with radii given relative to ``||W0||_F``."""
    w0d = w0.double()
    scale = w0d.norm().item()

    def fit(hyper: dict[str, float], x: torch.Tensor, y: torch.Tensor) -> Probe:
        W, b = fit_probe(
            x, y, w0.shape[1], w0d, hyper["delta_rel"] * scale, hyper["delta_b_rel"] * scale,
            steps=steps,
        )  # fmt: skip
        return Probe(w0d, W, b, dict(hyper))

    return fit


def _scratch_fit(num_classes: int, steps: int) -> ProbeFit:
    def fit(hyper: dict[str, float], x: torch.Tensor, y: torch.Tensor) -> Probe:
        W, b = fit_probe(x, y, num_classes, None, l2=hyper["l2"], steps=steps)
        return Probe(None, W, b, dict(hyper))

    return fit


def _zeroshot_init_grid(
    delta_grid: Sequence[float], delta_b_grid: Sequence[float]
) -> list[dict[str, float]]:
    return [
        {"delta_rel": float(w), "delta_b_rel": float(b)} for w in delta_grid for b in delta_b_grid
    ]


def _select_heldout(
    fit: ProbeFit,
    grid: Sequence[dict[str, float]],
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    val_x: torch.Tensor,
    val_y: torch.Tensor,
) -> Probe:
    """The probe of ``grid`` with the best held-out accuracy (ties: held-out CE)."""
    best: tuple[tuple[float, float], Probe] | None = None
    for hyper in grid:
        probe = fit(hyper, train_x, train_y)
        key = _val_key(probe, val_x, val_y)
        if best is None or key > best[0]:
            best = (key, probe)
    assert best is not None
    best[1].val_accuracy = best[0][0]
    return best[1]


def kshot_folds(
    labels: torch.Tensor, max_folds: int = KSHOT_MAX_FOLDS, seed: int = 0
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Stratified cross-validation folds of a k-shot training set: ``[(train, val)]``.

    Each class's shots are dealt in a seeded random order, round-robin, into
    ``F = min(k_min, max_folds)`` folds (``k_min``: the fewest shots of any class), so
    every fold validates on at least one shot of every class and trains on the others.
    Empty when ``k_min < 2`` (no shot can be held out) or ``max_folds < 2``.
    """
    labels = labels.cpu()
    classes = torch.unique(labels).tolist()
    k_min = min((int((labels == c).sum()) for c in classes), default=0)
    n_folds = min(k_min, int(max_folds))
    if n_folds < 2:
        return []
    g = torch.Generator().manual_seed(int(seed))
    fold_of = torch.empty(len(labels), dtype=torch.long)
    for c in classes:
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        fold_of[idx] = torch.arange(len(idx)) % n_folds
    everything = torch.arange(len(labels))
    return [(everything[fold_of != f], everything[fold_of == f]) for f in range(n_folds)]


def _select_kshot(
    fit: ProbeFit,
    grid: Sequence[dict[str, float]],
    defaults: dict[str, float],
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    max_folds: int,
) -> Probe:
    """Choose from ``grid`` by cross-validation inside the shots (mean fold accuracy, ties:
    mean fold CE) and refit on all shots; with too few shots use ``defaults``.

    The chosen probe's ``hyper`` records ``cv_folds`` (0: the fixed defaults were used).
    """
    folds = kshot_folds(train_y, max_folds)
    if not folds:
        probe = fit(dict(defaults), train_x, train_y)
        probe.hyper["cv_folds"] = 0.0
        return probe
    best: tuple[tuple[float, float], dict[str, float]] | None = None
    for hyper in grid:
        keys = [_val_key(fit(hyper, train_x[tr], train_y[tr]), train_x[va], train_y[va])
                for tr, va in folds]  # fmt: skip
        key = (float(np.mean([a for a, _ in keys])), float(np.mean([c for _, c in keys])))
        if best is None or key > best[0]:
            best = (key, hyper)
    assert best is not None
    probe = fit(dict(best[1]), train_x, train_y)
    probe.val_accuracy = best[0][0]
    probe.hyper["cv_folds"] = float(len(folds))
    return probe


def zeroshot_init_probe(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    val_x: torch.Tensor,
    val_y: torch.Tensor,
    w0: torch.Tensor,
    delta_grid: Sequence[float] = DELTA_GRID,
    delta_b_grid: Sequence[float] = DELTA_B_GRID,
    steps: int = 300,
) -> Probe:
    """Zero-shot-initialised probe with the radii (relative to ``||W0||_F``) that score
    best on the labelled held-out set ``val`` (the ``heldout`` protocol: extra labels)."""
    grid = _zeroshot_init_grid(delta_grid, delta_b_grid)
    return _select_heldout(_zeroshot_init_fit(w0, steps), grid, train_x, train_y, val_x, val_y)


def scratch_probe(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    val_x: torch.Tensor,
    val_y: torch.Tensor,
    num_classes: int,
    l2_grid: Sequence[float] = L2_GRID,
    steps: int = 300,
) -> Probe:
    """L2-regularised logistic-regression probe (no ``W0``) with the ``l2`` of ``l2_grid``
    that scores best on the labelled held-out set ``val`` (``heldout`` protocol)."""
    grid = [{"l2": float(v)} for v in l2_grid]
    return _select_heldout(_scratch_fit(num_classes, steps), grid, train_x, train_y, val_x, val_y)


def zeroshot_init_probe_kshot(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    w0: torch.Tensor,
    delta_grid: Sequence[float] = DELTA_GRID,
    delta_b_grid: Sequence[float] = DELTA_B_GRID,
    steps: int = 300,
    max_folds: int = KSHOT_MAX_FOLDS,
) -> Probe:
    """Zero-shot-initialised probe whose radii are chosen from the shots alone
    (:func:`kshot_folds` cross-validation; :data:`KSHOT_DEFAULTS` at one shot per class)."""
    defaults = {k: KSHOT_DEFAULTS[k] for k in ("delta_rel", "delta_b_rel")}
    grid = _zeroshot_init_grid(delta_grid, delta_b_grid)
    return _select_kshot(_zeroshot_init_fit(w0, steps), grid, defaults, train_x, train_y, max_folds)


def scratch_probe_kshot(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    num_classes: int,
    l2_grid: Sequence[float] = L2_GRID,
    steps: int = 300,
    max_folds: int = KSHOT_MAX_FOLDS,
) -> Probe:
    """Scratch probe whose ``l2`` is chosen from the shots alone (as
    :func:`zeroshot_init_probe_kshot`)."""
    grid = [{"l2": float(v)} for v in l2_grid]
    defaults = {"l2": KSHOT_DEFAULTS["l2"]}
    return _select_kshot(
        _scratch_fit(num_classes, steps), grid, defaults, train_x, train_y, max_folds
    )


def _summary(values: list[list[float]]) -> dict[str, list[float]]:
    """Mean and std over seeds of each row (NaN where a row has no finite value)."""
    mean, std = [], []
    for row in values:
        finite = np.asarray([v for v in row if math.isfinite(v)], dtype=float)
        mean.append(float(finite.mean()) if finite.size else float("nan"))
        std.append(float(finite.std()) if finite.size else float("nan"))
    return {"mean": mean, "std": std}


def check_protocol(protocol: str) -> str:
    """``protocol`` if it is one of :data:`PROTOCOLS`, else a one-line ValueError."""
    if protocol not in PROTOCOLS:
        raise ValueError(
            f"few-shot protocol must be one of {list(PROTOCOLS)}, got {protocol!r} (kshot: "
            "hyper-parameters from the shots only; heldout: chosen on extra labelled images)"
        )
    return protocol


def fewshot_scores(
    pool_x: torch.Tensor,
    pool_y: torch.Tensor,
    val_x: torch.Tensor | None,
    val_y: torch.Tensor | None,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    w0: torch.Tensor,
    ks: Sequence[int] = (0, 1, 2, 4, 8, 16),
    seeds: Sequence[int] = (0, 1, 2),
    delta_grid: Sequence[float] = DELTA_GRID,
    delta_b_grid: Sequence[float] = DELTA_B_GRID,
    l2_grid: Sequence[float] = L2_GRID,
    steps: int = 300,
    protocol: str = "kshot",
    max_folds: int = KSHOT_MAX_FOLDS,
) -> dict[str, Any]:
    """Test accuracy of both probes for each ``k`` (shots per class from the pool) and seed.

    ``protocol="kshot"`` chooses the probes' hyper-parameters from the k shots alone
    (``val`` is not used and may be None); ``"heldout"`` chooses them on the labelled
    held-out set ``val``, i.e. with labels beyond the k shots.

    Returns ``{"ks", "seeds", "protocol", "uses_extra_labels", "zeroshot",
    "zeroshot_init": {"per_seed", "mean", "std", "hyper"}, "scratch": {...}}``;
    ``per_seed[i][j]`` is the accuracy at ``ks[i]``, seed ``seeds[j]``. At k = 0 the
    zero-shot-initialised probe is the zero-shot classifier and the scratch probe is
    undefined (NaN).
    """
    check_protocol(protocol)
    if protocol == "heldout" and (val_x is None or val_y is None):
        raise ValueError("the heldout few-shot protocol needs labelled held-out features")
    num_classes = w0.shape[1]
    zs = Probe(
        w0.double(),
        torch.zeros_like(w0, dtype=torch.float64),
        torch.zeros(num_classes, dtype=torch.float64),
        {},
    )
    zs_acc = zs.accuracy(test_x, test_y)
    res: dict[str, Any] = {
        "ks": list(ks),
        "seeds": list(seeds),
        "protocol": protocol,
        "uses_extra_labels": protocol == "heldout",
        "zeroshot": zs_acc,
        "num_classes": num_classes,
    }
    for name in ("zeroshot_init", "scratch"):
        res[name] = {"per_seed": [], "hyper": []}
    for k in ks:
        rows: dict[str, list[float]] = {"zeroshot_init": [], "scratch": []}
        hyper: dict[str, list[dict[str, float]]] = {"zeroshot_init": [], "scratch": []}
        for seed in seeds:
            if k == 0:
                rows["zeroshot_init"].append(zs_acc)
                rows["scratch"].append(float("nan"))
                hyper["zeroshot_init"].append({"delta_rel": 0.0, "delta_b_rel": 0.0})
                hyper["scratch"].append({})
                continue
            idx = sample_few_shot(pool_y, k, seed, num_classes)
            tx, ty = pool_x[idx], pool_y[idx]
            if protocol == "heldout":
                zsi = zeroshot_init_probe(tx, ty, val_x, val_y, w0, delta_grid, delta_b_grid, steps)
                scr = scratch_probe(tx, ty, val_x, val_y, num_classes, l2_grid, steps)
            else:
                zsi = zeroshot_init_probe_kshot(
                    tx, ty, w0, delta_grid, delta_b_grid, steps, max_folds
                )
                scr = scratch_probe_kshot(tx, ty, num_classes, l2_grid, steps, max_folds)
            rows["zeroshot_init"].append(zsi.accuracy(test_x, test_y))
            rows["scratch"].append(scr.accuracy(test_x, test_y))
            hyper["zeroshot_init"].append(zsi.hyper)
            hyper["scratch"].append(scr.hyper)
        for name in rows:
            res[name]["per_seed"].append(rows[name])
            res[name]["hyper"].append(hyper[name])
    for name in ("zeroshot_init", "scratch"):
        res[name].update(_summary(res[name]["per_seed"]))
    return res


# --------------------------------------------------------------------------- models
@torch.no_grad()
def encode_eval_images(
    module: Any, eval_set: Any, collate: Any, batch_size: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised image embeddings (float32, CPU) and labels of an :class:`EvalSet`."""
    loader = torch.utils.data.DataLoader(
        eval_set.images, batch_size=batch_size, shuffle=False, collate_fn=collate
    )
    device = next(module.model.parameters()).device
    feats, labels = [], []
    for batch in loader:
        feats.append(module.model.encode_image(batch["image"].to(device)).float().cpu())
        labels.append(batch["label"].cpu())
    return torch.cat(feats), torch.cat(labels)


def split_pool(labels: torch.Tensor, seed: int = 1234) -> tuple[torch.Tensor, torch.Tensor]:
    """Split indices of labelled items into two halves per class (pool, held-out)."""
    g = torch.Generator().manual_seed(seed)
    pool, held = [], []
    for c in torch.unique(labels[labels >= 0]).tolist():
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        half = (len(idx) + 1) // 2
        pool.append(idx[:half])
        held.append(idx[half:])
    return torch.cat(pool).sort().values, torch.cat(held).sort().values


def fewshot_curve(
    module: Any,
    datamodule: Any,
    ks: Sequence[int] = (0, 1, 2, 4, 8, 16),
    seeds: Sequence[int] = (0, 1, 2),
    pool_set: int = 0,
    test_set: int = 0,
    protocol: str = "kshot",
    **kwargs: Any,
) -> dict[str, Any]:
    """Few-shot curves (zero-shot-init vs scratch) of a trained :class:`VLModule`.

    Shots are drawn from the labelled images of validation set ``pool_set`` of the
    datamodule and accuracy is measured on test set ``test_set`` (which must use the same
    class names). With ``protocol="kshot"`` the radii / ``l2`` are chosen from the shots
    alone; with ``"heldout"`` the validation set is split in two halves per class, shots
    come from one and the radii / ``l2`` are chosen on the other (labels beyond the k
    shots). ``kwargs`` go to :func:`fewshot_scores` (grids, steps, max_folds).
    """
    check_protocol(protocol)
    from vlexp.eval.metrics.zeroshot import class_embeddings

    datamodule.setup("validate")  # the eval sets only: no training data read
    val_es, test_es = datamodule.val_sets[pool_set], datamodule.test_sets[test_set]
    if not val_es.class_names or list(val_es.class_names) != list(test_es.class_names):
        raise ValueError(
            f"few-shot probing needs labelled sets with the same classes: val set "
            f"'{val_es.name}' and test set '{test_es.name}' differ (pick others with "
            "pool_set=/test_set=)"
        )
    module.eval()
    device = next(module.model.parameters()).device
    vx, vy = encode_eval_images(module, val_es, datamodule.eval_collate)
    tx, ty = encode_eval_images(module, test_es, datamodule.eval_collate)
    keep = ty >= 0
    tx, ty = tx[keep], ty[keep]
    if protocol == "heldout":
        pool_idx, held_idx = split_pool(vy)
    else:  # the shots are the only labels used: draw them from every labelled image
        pool_idx, held_idx = torch.nonzero(vy >= 0).flatten(), torch.zeros(0, dtype=torch.long)
    class_emb = class_embeddings(module.model, val_es.class_names, val_es.templates, device)
    w0 = zeroshot_weights(class_emb.float().cpu(), module.model.logit_scale().item())
    held_x, held_y = (vx[held_idx], vy[held_idx]) if protocol == "heldout" else (None, None)
    res = fewshot_scores(
        vx[pool_idx], vy[pool_idx], held_x, held_y, tx, ty, w0, ks, seeds,
        protocol=protocol, **kwargs,
    )  # fmt: skip
    res.update(
        {
            "pool_set": val_es.name,
            "test_set": test_es.name,
            "pool_size": len(pool_idx),
            "heldout_size": len(held_idx),
            "test_size": len(ty),
        }
    )
    return res


def plot_fewshot_curve(result: dict[str, Any], path: str | Path, title: str = "") -> None:
    """Test accuracy vs shots per class for both probes (mean +- std over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = np.asarray(result["ks"], dtype=float)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, label in (("zeroshot_init", "zero-shot init"), ("scratch", "from scratch")):
        mean = 100 * np.asarray(result[name]["mean"], dtype=float)
        std = 100 * np.asarray(result[name]["std"], dtype=float)
        ok = np.isfinite(mean)
        ax.errorbar(ks[ok], mean[ok], yerr=std[ok], marker="o", capsize=3, label=label)
    ax.axhline(100 * result["zeroshot"], ls="--", c="gray", lw=1, label="zero-shot")
    ax.axhline(100 / result["num_classes"], ls=":", c="gray", lw=1, label="chance")
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xticks(ks)
    ax.set_xticklabels([str(int(k)) for k in ks])
    ax.set_xlabel("shots per class")
    ax.set_ylabel("test top-1 accuracy (%)")
    protocol = result.get("protocol", "heldout")  # results written before protocols existed
    ax.set_title(title or f"few-shot linear probe ({result.get('test_set', '')}, {protocol})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
