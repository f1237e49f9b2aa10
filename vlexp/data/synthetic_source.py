"""`data.source.name=synthetic`: the embedded procedural benchmark as train/val/test splits."""

from __future__ import annotations

from typing import Any

from vlexp.data.sources import DATASETS, DataSplits
from vlexp.eval.sets import EvalSet


@DATASETS.register("synthetic")
def synthetic_splits(seed: int = 0, **knobs: Any) -> DataSplits:
    """Train pairs plus val (`synthetic`) and test (`synthetic`, `compositional`) sets.

    ``knobs`` are the generator's (see :func:`vlexp.data.synthetic.build_synthetic`).
    """
    from vlexp.data.synthetic import build_synthetic, classification_class_names, prompt_templates

    splits = build_synthetic(seed=seed, **knobs)
    names, templates = list(classification_class_names()), list(prompt_templates())

    def eval_set(name: str, split: str) -> EvalSet:
        return EvalSet.from_pairs(name, splits[split], names, templates)

    return DataSplits(
        train=splits["train"],
        val=[eval_set("synthetic", "val")],
        test=[eval_set("synthetic", "test"), eval_set("compositional", "test_compositional")],
    )
