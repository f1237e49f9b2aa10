"""`data.source.name=synthetic`: the embedded procedural benchmark as train/val/test splits."""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any

import numpy as np

from vlexp.data.eval_set import EvalSet
from vlexp.data.sources.base import DATASETS, DataSplits
from vlexp.data.sources.schema import SYNTHETIC_SCHEMA


def _train_size(options: dict[str, Any]) -> int | None:
    n = options.get("num_train")
    return n if isinstance(n, int) and not isinstance(n, bool) and n >= 1 else None


@DATASETS.register(
    "synthetic",
    schema=SYNTHETIC_SCHEMA,
    hooks={"eval_names": lambda options: ["synthetic"], "train_size": _train_size},
)
def synthetic_splits(
    seed: int = 0, finegrained_k: int = 4, build_train: bool = True, **knobs: Any
) -> DataSplits:
    """Train pairs, val (`synthetic`) and test (`synthetic`, `compositional`, `finegrained`,
    `single`) sets.

    ``knobs`` are the generator's (see :func:`vlexp.data.synthetic.build_synthetic`).
    ``finegrained_k`` (default 4, 0 = no such set) is the number of same-object false
    captions per test image in the `finegrained` set: its images are the test split's,
    its true captions their fully detailed captions, scored against ``finegrained_k``
    counterfactuals each (:meth:`SyntheticPairs.fine_grained`; chance ``1/(k+1)``).
    The `single` set (``num_test_single`` images, default as many as ``num_test``, 0 =
    no such set) scores zero-shot classification only: each image holds exactly one
    object, labelled with its class, so a prompt naming one class can describe the whole
    image (chance ``1/classes``). ``build_train=False`` (evaluation) generates no training
    pair (every split is generated on its own, so the others do not change).
    """
    from vlexp.data.synthetic import build_synthetic, classification_class_names, prompt_templates

    k = _check_k(finegrained_k)
    splits = build_synthetic(seed=seed, **(knobs if build_train else {**knobs, "num_train": 0}))
    names, templates = list(classification_class_names()), list(prompt_templates())

    def eval_set(name: str, split: str) -> EvalSet:
        return EvalSet.from_pairs(name, splits[split], names, templates)

    test = [  # an empty split (size 0) is no set: nothing to score
        eval_set(name, split)
        for name, split in (("synthetic", "test"), ("compositional", "test_compositional"))
        if len(splits[split]) > 0
    ]
    if k > 0 and len(splits["test"]) > 0:
        test.append(finegrained_set(splits["test"], k))
    if len(splits["test_single"]) > 0:
        single = eval_set("single", "test_single")
        test.append(dataclasses.replace(single, retrieval=False))  # captions repeat: no retrieval
    train = splits["train"] if build_train else None
    return DataSplits(train=train, val=[eval_set("synthetic", "val")], test=test)


def _max_k() -> int:
    """Counterfactuals of a one-object scene's detailed caption: one per other attribute value."""
    from vlexp.data.synthetic.ontology import COLOUR_NAMES, SIZES, TEXTURES

    return (len(SIZES) - 1) + (len(COLOUR_NAMES) - 1) + (len(TEXTURES) - 1)


def _check_k(k: Any) -> int:
    top = _max_k()
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 0 <= k <= top:
        raise ValueError(
            f"data.source.finegrained_k={k!r} is invalid: it must be an integer in [0, {top}] "
            f"(a one-object scene has only {top} counterfactual captions; 0 turns the set off)"
        )
    return int(k)


def finegrained_set(source: Any, k: int) -> EvalSet:
    """The `finegrained` eval set of a synthetic split: detailed captions + k distractors each."""
    pairs = [source.fine_grained(i, k) for i in range(len(source))]
    base = EvalSet.from_pairs("finegrained", source)
    return dataclasses.replace(
        base,
        captions=[true for true, _ in pairs],
        caption_image=np.arange(len(pairs)),
        retrieval=False,
        distractors=[list(false) for _, false in pairs],
    )
