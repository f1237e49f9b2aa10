"""Pictures of a run: similarity heatmap, top-k retrieval examples, training schedules."""

from vlexp.train.viz.plots import (
    Retrieved,
    retrieval_examples,
    schedule_columns,
    schedules_figure,
    similarity_heatmap,
)

__all__ = [
    "Retrieved",
    "retrieval_examples",
    "schedule_columns",
    "schedules_figure",
    "similarity_heatmap",
]
