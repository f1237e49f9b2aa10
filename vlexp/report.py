"""The end-of-run metrics table: every metric next to its chance level."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from vlexp.eval.finegrained import finegrained_chance
from vlexp.eval.retrieval import retrieval_chance
from vlexp.eval.sets import EvalSet


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
