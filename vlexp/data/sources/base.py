"""Data-source registry: a source builds the training pairs and the evaluation sets."""

from __future__ import annotations

from dataclasses import dataclass, field

from vlexp.data.eval_set import EvalSet
from vlexp.data.types import PairSource
from vlexp.registry import Registry


@dataclass
class DataSplits:
    """What a data source provides: training pairs plus validation and test sets.

    ``train`` is None when the source was built for evaluation (``build_train=False``,
    passed by the datamodule to every source): the held-out sets only.
    """

    train: PairSource | None
    val: list[EvalSet] = field(default_factory=list)
    test: list[EvalSet] = field(default_factory=list)


DATASETS: Registry[DataSplits] = Registry("data source", config_group="data.source")
