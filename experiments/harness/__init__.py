"""Shared machinery of the committed experiments: run jobs, pair seeds, decide, plot.

Every experiment under ``experiments/`` is one command that trains a grid of
(row, seed) jobs with ``python -m vlexp.run``, compares a method with its baseline
*seed by seed* (the seed draws the synthetic data and the initial weights, so a seed
is a paired unit), and reports the mean paired difference with a 95 % Student-t
interval and a plain verdict per claim.

- :mod:`experiments.harness.runner`: :class:`Job`, :func:`run_jobs`, :func:`print_plan`
- :mod:`experiments.harness.stats`: :func:`paired`, :func:`seeds_needed`, :func:`verdict`
- :mod:`experiments.harness.report`: :func:`paired_table_md`, :func:`plot_paired`,
  :func:`log_images_to_wandb`
"""

from experiments.harness.report import log_images_to_wandb, paired_table_md, plot_paired
from experiments.harness.runner import Job, job_dir, print_plan, result_metric, run_jobs
from experiments.harness.stats import Paired, paired, seeds_needed, t_quantile, verdict

__all__ = [
    "Job",
    "Paired",
    "job_dir",
    "log_images_to_wandb",
    "paired",
    "paired_table_md",
    "plot_paired",
    "print_plan",
    "result_metric",
    "run_jobs",
    "seeds_needed",
    "t_quantile",
    "verdict",
]
