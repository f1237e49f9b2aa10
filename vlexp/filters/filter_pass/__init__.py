"""The standalone filtering pass: ``python -m vlexp.cli.filter input=... output_dir=...``.

Applies a registered pair filter (DiHT's CAT filter by default, see :mod:`vlexp.filters`,
the criteria) to a dataset in files, img2dataset tar shards or a CSV/TSV/parquet table of
image paths and captions, and writes the kept subset in the same format to a separate
folder, with a report (``report.json``/``report.md``). Work is split into units (shards,
or chunks of table rows) that run in worker processes, finish atomically and are skipped
when the pass is run again; disjoint unit ranges can run as a SLURM job array whose
unit reports ``merge`` joins. Guide: ``docs/FILTER_PASS.md``.
"""

from vlexp.filters.filter_pass.merge import IncompletePass, merge_pass
from vlexp.filters.filter_pass.options import PassOptions
from vlexp.filters.filter_pass.report import UnitReport, merge_reports, to_markdown, without_timing
from vlexp.filters.filter_pass.runner import FilterPassError, plan_pass, run_pass

__all__ = [
    "FilterPassError",
    "IncompletePass",
    "PassOptions",
    "UnitReport",
    "merge_pass",
    "merge_reports",
    "plan_pass",
    "run_pass",
    "to_markdown",
    "without_timing",
]
