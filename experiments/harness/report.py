"""Tables and plots of paired differences, and their upload to wandb."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from experiments.harness.stats import Paired


def _num(x: float) -> str:
    return f"{x:+.2f}" if math.isfinite(x) else "n/a"


def paired_table_md(rows: Sequence[tuple[str, Paired]], unit: str = "pts") -> str:
    """Markdown table: per comparison, the per-seed differences, mean, sd and 95 % CI."""
    lines = [
        f"| comparison | per-seed differences ({unit}) | mean | sd | 95 % CI | seeds |",
        "|---|---|---|---|---|---|",
    ]
    for label, p in rows:
        per_seed = ", ".join(f"{s}: {_num(d)}" for s, d in zip(p.seeds, p.diffs, strict=True))
        lines.append(
            f"| {label} | {per_seed} | {_num(p.mean)} | "
            f"{p.sd:.2f} | [{_num(p.lo)}, {_num(p.hi)}] | {p.n} |"
        )
    return "\n".join(lines)


def plot_paired(
    rows: Sequence[tuple[str, Paired]],
    path: str | Path,
    title: str,
    xlabel: str = "paired difference (points)",
) -> Path:
    """Horizontal error bars (mean, 95 % CI) with each seed's difference as a dot; zero line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(7.5, 0.55 * len(rows) + 1.6))
    for i, (_, p) in enumerate(rows):
        y = len(rows) - 1 - i
        if math.isfinite(p.lo):
            ax.errorbar(
                p.mean, y, xerr=[[p.mean - p.lo], [p.hi - p.mean]], fmt="o", color="C0",
                capsize=4, zorder=3,
            )  # fmt: skip
        else:
            ax.plot(p.mean, y, "o", color="C0")
        ax.plot(p.diffs, [y] * p.n, ".", color="0.45", zorder=2)
    ax.axvline(0.0, color="k", lw=0.8)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([label for label, _ in reversed(rows)])
    ax.set_xlabel(xlabel + "; bar: 95 % CI of the mean, dots: seeds")
    ax.set_title(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def log_images_to_wandb(paths: Sequence[str | Path], sweep_dir: str | Path, name: str) -> bool:
    """Log the experiment's plots to one wandb summary run in the jobs' group.

    The group is the sweep folder's name (what :func:`run_jobs` gives the jobs under
    ``logger=wandb``); the project is ``$WANDB_PROJECT`` or ``vlexp``, offline unless
    ``WANDB_MODE`` says otherwise. Returns False (and says so) without wandb.
    """
    try:
        import wandb
    except ImportError:
        print("wandb is not installed: the plots stay on disk only")
        return False
    run = wandb.init(
        project=os.environ.get("WANDB_PROJECT", "vlexp"), group=Path(sweep_dir).name,
        name=f"{name}-summary", job_type="summary", dir=str(sweep_dir),
        mode=os.environ.get("WANDB_MODE", "offline"), reinit=True,
    )  # fmt: skip
    run.log({Path(p).stem: wandb.Image(str(p)) for p in paths})
    run.finish()
    return True
