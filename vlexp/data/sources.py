"""Data-source registry: a source builds the training pairs and the evaluation sets."""

from __future__ import annotations

from dataclasses import dataclass, field

from vlexp.data.types import PairSource
from vlexp.eval.sets import EvalSet
from vlexp.registry import Registry


@dataclass
class DataSplits:
    """What a data source provides: training pairs plus validation and test sets."""

    train: PairSource
    val: list[EvalSet] = field(default_factory=list)
    test: list[EvalSet] = field(default_factory=list)


DATASETS: Registry[DataSplits] = Registry("data source", config_group="data.source")


# registration of the built-in sources (csv, webdataset, wds_indexed; synthetic)
from vlexp.data import file_sources, synthetic_source  # noqa: E402,F401
