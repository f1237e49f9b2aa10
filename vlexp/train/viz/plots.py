"""Matplotlib figures written as PNG: similarity heatmap, top-k retrieval, schedules.

Pure functions of arrays/tables (no model, no trainer), drawn on ``matplotlib.figure.Figure``
objects so no global pyplot state or GUI backend is touched.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

# CSV columns plotted by schedules_figure, by prefix; a column matching none is left out
SCHEDULE_PREFIXES = ("train/", "sampler/", "lr-")


@dataclass
class Retrieved:
    """One retrieved caption: its text, similarity, and whether it belongs to the query."""

    caption: str
    score: float
    correct: bool


def _save(fig: Figure, path: Path, dpi: int = 110) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "\u2026"


def similarity_heatmap(
    sim: np.ndarray, path: Path, captions: Sequence[str] = (), title: str = ""
) -> Path:
    """Image-by-caption cosine-similarity matrix; row ``i``'s positive is column ``i``.

    Positives are outlined, each row's argmax is dotted; the title reports how many rows
    put their maximum on the diagonal (the batch's image->text R@1).
    """
    sim = np.asarray(sim, dtype=float)
    n_img, n_cap = sim.shape
    side = max(4.0, 0.32 * max(n_img, n_cap) + 2.5)
    fig = Figure(figsize=(side + (3.0 if len(captions) else 0.0), side))
    ax = fig.add_subplot(1, 1, 1)
    lim = float(np.max(np.abs(sim))) if sim.size else 1.0
    im = ax.imshow(sim, cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="cosine similarity")
    for i in range(min(n_img, n_cap)):
        ax.add_patch(_rect(i, i, "black", "-"))
    for i, j in enumerate(np.argmax(sim, axis=1) if n_cap else []):
        if j != i:
            ax.add_patch(_rect(i, int(j), "gold", ":"))
    hits = int(sum(int(np.argmax(sim[i])) == i for i in range(min(n_img, n_cap)))) if n_cap else 0
    ax.set_xlabel("caption")
    ax.set_ylabel("image")
    if len(captions):
        ax.set_yticks(range(n_img))
        ax.set_yticklabels(
            [f"{i}: {_short(c, 40)}" for i, c in enumerate(captions[:n_img])], fontsize=7
        )
    ax.set_title(f"{title}  (row max on diagonal: {hits}/{min(n_img, n_cap)})".strip(), fontsize=9)
    return _save(fig, path)


def _rect(row: int, col: int, color: str, style: str):
    from matplotlib.patches import Rectangle

    return Rectangle(
        (col - 0.5, row - 0.5), 1, 1, fill=False, edgecolor=color, linestyle=style, linewidth=1.2
    )


def retrieval_examples(
    images: Sequence[np.ndarray],
    results: Sequence[Sequence[Retrieved]],
    path: Path,
    title: str = "",
    truths: Sequence[str] = (),
) -> Path:
    """One row per query image: the image, then its top-k captions (correct ones green)."""
    n = len(images)
    fig = Figure(figsize=(10.0, 2.2 * max(1, n)))
    for r, (img, hits) in enumerate(zip(images, results)):
        ax_img = fig.add_subplot(n, 3, 3 * r + 1)
        ax_img.imshow(np.asarray(img))
        ax_img.set_axis_off()
        if r < len(truths):
            ax_img.set_title("\n".join(textwrap.wrap(_short(truths[r], 90), 32)), fontsize=7)
        ax_txt = fig.add_subplot(n, 3, (3 * r + 2, 3 * r + 3))
        ax_txt.set_axis_off()
        for k, hit in enumerate(hits):
            mark = "\u2713" if hit.correct else "\u2717"
            ax_txt.text(
                0.0,
                1.0 - (k + 0.5) / max(1, len(hits)),
                f"{k + 1}. {mark} {hit.score:+.3f}  {_short(hit.caption, 80)}",
                color="tab:green" if hit.correct else "black",
                fontsize=8,
                va="center",
                ha="left",
                transform=ax_txt.transAxes,
            )
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def schedule_columns(table: pd.DataFrame) -> list[str]:
    """Columns of a Lightning CSV log worth plotting over steps (losses, schedules, lr)."""
    cols = [c for c in table.columns if str(c).startswith(SCHEDULE_PREFIXES)]
    return [c for c in cols if table[c].notna().any()]


def schedules_figure(metrics_csv: Path, path: Path, title: str = "") -> Path | None:
    """One panel per logged training quantity over ``step`` (None when nothing to plot).

    Picks ``train/*`` (loss and its components, logit scale, objective schedules such as
    ``train/softalign_alpha``), ``sampler/*`` (curriculum state) and ``lr-*`` columns.
    """
    table = pd.read_csv(metrics_csv)
    if "step" not in table.columns:
        return None
    cols = schedule_columns(table)
    if not cols:
        return None
    ncols = min(3, len(cols))
    nrows = math.ceil(len(cols) / ncols)
    fig = Figure(figsize=(4.2 * ncols, 2.8 * nrows))
    for i, col in enumerate(cols):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        part = table[["step", col]].dropna()
        ax.plot(
            part["step"].to_numpy(),
            part[col].to_numpy(),
            lw=1.2,
            marker="." if len(part) < 30 else None,
        )
        ax.set_title(col, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
