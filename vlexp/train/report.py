"""The end-of-run metrics table: every metric next to its chance level."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from vlexp.data.eval_set import EvalSet
from vlexp.eval.metrics.finegrained import finegrained_chance
from vlexp.eval.metrics.retrieval import retrieval_chance


def objective_label(objective: Mapping[str, Any]) -> str:
    """The loss that runs: its name, and for ``composite`` the terms with non-zero weight."""
    name = str(objective.get("name"))
    terms = objective.get("terms")
    if name != "composite" or not isinstance(terms, Mapping):
        return name
    active = [
        str(t.get("name"))
        for t in terms.values()
        if isinstance(t, Mapping) and float(t.get("weight", 1.0)) != 0.0
    ]
    return f"composite({' + '.join(active)})"


def run_title(cfg: DictConfig, choices: Mapping[str, Any] | None = None) -> str:
    """One line naming what ran: experiment, objective, sampler, filter and encoder.

    ``choices`` are Hydra's group choices (``hydra.runtime.choices``); a preset whose name
    differs from what it builds is shown in brackets, e.g. ``objective clip [tonics]``.
    """
    choices = choices or {}
    container = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(container, dict)
    ran = {
        "objective": objective_label(container.get("objective") or {}),
        "sampler": str(cfg.sampler.name),
        "filter": str(cfg.filter.name),
        "encoder": str(cfg.encoder.name),
    }
    parts = []
    for group, label in ran.items():
        preset = choices.get(group)
        shown = f"{group} {label}"
        if preset not in (None, "null") and str(preset) != label:
            shown += f" [{preset}]"
        parts.append(shown)
    experiment = choices.get("experiment")
    head = f"experiment {experiment}: " if experiment not in (None, "null") else ""
    return head + ", ".join(parts)


def chance_levels(eval_set: EvalSet, ks: tuple[int, ...]) -> dict[str, float]:
    """Expected value of each metric of ``eval_set`` under random embeddings."""
    out: dict[str, float] = {}
    for k in ks:
        out.update(
            retrieval_chance(
                eval_set.num_images, len(eval_set.captions), eval_set.captions_per_image, k
            )
        )
    if eval_set.distractors and any(eval_set.distractors):
        # the mean rank (finegrained_rank, lower is better) goes to metrics.json only
        acc = finegrained_chance([len(d) for d in eval_set.distractors])["finegrained_acc"]
        out["finegrained_acc"] = acc
    c = len(eval_set.class_names)
    if c:
        out["zeroshot_top1"] = 1.0 / c
        if c >= 5:
            out["zeroshot_top5"] = 5.0 / c
    return out


def metrics_rows(
    metrics: dict[str, float], sets: list[EvalSet], stage: str, ks: tuple[int, ...]
) -> list[dict[str, Any]]:
    """Rows (set, metric, value, chance, x chance) for the sets' metrics present."""
    rows = []
    for s in sets:
        chance = chance_levels(s, ks)
        for name, ch in chance.items():
            key = f"{stage}/{s.name}/{name}"
            if key in metrics:
                v = float(metrics[key])
                rows.append(
                    {
                        "set": s.name,
                        "metric": name,
                        "value": v,
                        "chance": ch,
                        "x_chance": v / ch if ch > 0 else float("nan"),
                    }
                )
    return rows


def print_metrics_table(rows: list[dict[str, Any]], title: str) -> None:
    """Print ``rows`` (from :func:`metrics_rows`) as a rich table titled ``title``."""
    table = Table(title=title)
    for col, just in (
        ("set", "left"),
        ("metric", "left"),
        ("value %", "right"),
        ("chance %", "right"),
        ("x chance", "right"),
    ):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for r in rows:
        table.add_row(
            r["set"],
            r["metric"],
            f"{100 * r['value']:.2f}",
            f"{100 * r['chance']:.2f}",
            f"{r['x_chance']:.1f}",
        )
    Console().print(table)
