"""Few-shot linear probes on frozen image embeddings (DiHT's zero-shot-initialised probe).

Zero-shot-initialised probe: ``logits = x^T (W0 + W) + b`` where ``W0`` (D x C) is the
zero-shot classifier (class-prompt text embeddings times the model's logit scale).
Minimise the mean cross-entropy of the k-shot training features subject to
``||W||_F <= delta`` and ``||b||_2 <= delta_b`` by projected accelerated gradient descent
(FISTA with the projection onto the two balls, backtracking step size and momentum
restarts, see :func:`fit_probe`), full batch. ``delta``/``delta_b`` are chosen on
held-out data from grids given *relative to* ``||W0||_F`` (so the grids do not depend
on the logit scale or the number of classes). At k = 0 (or with both radii 0) the probe is
the zero-shot classifier.

Scratch probe: the same optimiser without ``W0``: L2-regularised multinomial logistic
regression ``CE + l2 / 2 ||W||_F^2`` (bias unpenalised), ``l2`` chosen on held-out data.

Both choose by held-out accuracy, ties broken by held-out cross-entropy.

Entry points: the tensor functions (:func:`fit_probe`, :func:`zeroshot_init_probe`,
:func:`scratch_probe`, :func:`fewshot_scores`), :func:`fewshot_curve` for a trained
module + datamodule, and the command
``python -m vlexp.eval.fewshot ckpt=RUN_DIR/checkpoints/last.ckpt [ks=[0,1,2,4,8,16]]
[seeds=[0,1,2]] [out=fewshot.json] [plot=fewshot.png]``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

DELTA_GRID = (0.0, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
DELTA_B_GRID = (0.0, 0.01, 0.03, 0.1, 0.3)
L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1)


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
    """Best zero-shot-initialised probe over the radius grids (relative to ``||W0||_F``)."""
    scale = w0.double().norm().item()
    w0d = w0.double()
    best: tuple[tuple[float, float], Probe] | None = None
    for rel_w in delta_grid:
        for rel_b in delta_b_grid:
            W, b = fit_probe(
                train_x, train_y, w0.shape[1], w0d, rel_w * scale, rel_b * scale, steps=steps
            )
            probe = Probe(w0d, W, b, {"delta_rel": rel_w, "delta_b_rel": rel_b})
            key = _val_key(probe, val_x, val_y)
            if best is None or key > best[0]:
                best = (key, probe)
    assert best is not None
    best[1].val_accuracy = best[0][0]
    return best[1]


def scratch_probe(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    val_x: torch.Tensor,
    val_y: torch.Tensor,
    num_classes: int,
    l2_grid: Sequence[float] = L2_GRID,
    steps: int = 300,
) -> Probe:
    """Best L2-regularised logistic-regression probe (no ``W0``) over ``l2_grid``."""
    best: tuple[tuple[float, float], Probe] | None = None
    for l2 in l2_grid:
        W, b = fit_probe(train_x, train_y, num_classes, None, l2=l2, steps=steps)
        probe = Probe(None, W, b, {"l2": l2})
        key = _val_key(probe, val_x, val_y)
        if best is None or key > best[0]:
            best = (key, probe)
    assert best is not None
    best[1].val_accuracy = best[0][0]
    return best[1]


def _summary(values: list[list[float]]) -> dict[str, list[float]]:
    """Mean and std over seeds of each row (NaN where a row has no finite value)."""
    mean, std = [], []
    for row in values:
        finite = np.asarray([v for v in row if math.isfinite(v)], dtype=float)
        mean.append(float(finite.mean()) if finite.size else float("nan"))
        std.append(float(finite.std()) if finite.size else float("nan"))
    return {"mean": mean, "std": std}


def fewshot_scores(
    pool_x: torch.Tensor,
    pool_y: torch.Tensor,
    val_x: torch.Tensor,
    val_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    w0: torch.Tensor,
    ks: Sequence[int] = (0, 1, 2, 4, 8, 16),
    seeds: Sequence[int] = (0, 1, 2),
    delta_grid: Sequence[float] = DELTA_GRID,
    delta_b_grid: Sequence[float] = DELTA_B_GRID,
    l2_grid: Sequence[float] = L2_GRID,
    steps: int = 300,
) -> dict[str, Any]:
    """Test accuracy of both probes for each ``k`` (shots per class from the pool) and seed.

    Returns ``{"ks", "seeds", "zeroshot", "zeroshot_init": {"per_seed", "mean", "std",
    "hyper"}, "scratch": {...}}``; ``per_seed[i][j]`` is the accuracy at ``ks[i]``, seed
    ``seeds[j]``. At k = 0 the zero-shot-initialised probe is the zero-shot classifier
    and the scratch probe is undefined (NaN).
    """
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
            zsi = zeroshot_init_probe(tx, ty, val_x, val_y, w0, delta_grid, delta_b_grid, steps)
            scr = scratch_probe(tx, ty, val_x, val_y, num_classes, l2_grid, steps)
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
    **kwargs: Any,
) -> dict[str, Any]:
    """Few-shot curves (zero-shot-init vs scratch) of a trained :class:`VLModule`.

    Shots come from one half (per class) of validation set ``pool_set`` of the
    datamodule, the radii / ``l2`` are chosen on the other half, and accuracy is measured
    on test set ``test_set`` (which must use the same class names). ``kwargs`` go to
    :func:`fewshot_scores` (grids, steps).
    """
    from vlexp.eval.zeroshot import class_embeddings

    datamodule.setup("fit")
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
    pool_idx, held_idx = split_pool(vy)
    class_emb = class_embeddings(module.model, val_es.class_names, val_es.templates, device)
    w0 = zeroshot_weights(class_emb.float().cpu(), module.model.logit_scale().item())
    res = fewshot_scores(
        vx[pool_idx], vy[pool_idx], vx[held_idx], vy[held_idx], tx, ty, w0, ks, seeds, **kwargs
    )
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
    ax.set_title(title or f"few-shot linear probe ({result.get('test_set', '')})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


# --------------------------------------------------------------------------- CLI
def _run_config(ckpt: Path, config: str | None) -> Any:
    from omegaconf import OmegaConf

    path = Path(config) if config else ckpt.resolve().parent.parent / ".hydra" / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(
            f"no run config at {path}; pass config=PATH/TO/.hydra/config.yaml of the run "
            "that wrote the checkpoint"
        )
    return OmegaConf.load(path)


def load_module_and_data(ckpt: str, config: str | None = None) -> tuple[Any, Any]:
    """The trained two-tower (in a :class:`VLModule` without objective) and its datamodule."""
    from omegaconf import OmegaConf

    from vlexp.datamodule import VLDataModule
    from vlexp.encoders import ENCODERS
    from vlexp.module import VLModule
    from vlexp.objectives.base import Objective

    cfg = _run_config(Path(ckpt), config)
    model = ENCODERS.build(OmegaConf.to_container(cfg.encoder, resolve=True))
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    model_state = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
    model.load_state_dict(model_state, strict=True)
    module = VLModule(model, Objective())
    datamodule = VLDataModule.for_model(cfg, model)
    return module, datamodule


def _parse_args(argv: Sequence[str]) -> dict[str, Any]:
    import yaml

    out: dict[str, Any] = {}
    for arg in argv:
        if "=" not in arg:
            raise SystemExit(
                f"arguments are key=value (got {arg!r}); see `python -m vlexp.eval.fewshot --help`"
            )
        key, value = arg.split("=", 1)
        out[key] = yaml.safe_load(value)
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """``python -m vlexp.eval.fewshot ckpt=PATH [ks=[..]] [seeds=[..]] [out=..] [plot=..]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        raise SystemExit(0)
    args = _parse_args(argv)
    if "ckpt" not in args:
        raise SystemExit("missing ckpt=PATH (a .ckpt written by `python -m vlexp.run`)")
    allowed = {"ckpt", "config", "ks", "seeds", "out", "plot", "steps", "pool_set", "test_set"}
    unknown = sorted(set(args) - allowed)
    if unknown:
        raise SystemExit(f"unknown argument(s) {unknown}; accepted: {sorted(allowed)}")
    module, datamodule = load_module_and_data(str(args["ckpt"]), args.get("config"))
    res = fewshot_curve(
        module,
        datamodule,
        ks=tuple(args.get("ks", (0, 1, 2, 4, 8, 16))),
        seeds=tuple(args.get("seeds", (0, 1, 2))),
        pool_set=int(args.get("pool_set", 0)),
        test_set=int(args.get("test_set", 0)),
        steps=int(args.get("steps", 300)),
    )
    res["ckpt"] = str(args["ckpt"])
    out = Path(args.get("out") or Path(args["ckpt"]).resolve().parent.parent / "fewshot.json")
    out.write_text(json.dumps(res, indent=1))
    print(f"zero-shot: {100 * res['zeroshot']:.2f}%")
    for i, k in enumerate(res["ks"]):
        zsi, scr = res["zeroshot_init"]["mean"][i], res["scratch"]["mean"][i]
        print(
            f"k={k:>3}: zero-shot init {100 * zsi:6.2f}%   scratch "
            + ("   n/a" if not math.isfinite(scr) else f"{100 * scr:6.2f}%")
        )
    print(f"wrote {out}")
    if args.get("plot"):
        plot_fewshot_curve(res, args["plot"])
        print(f"wrote {args['plot']}")
    return res


if __name__ == "__main__":
    main()
