"""Tests of vlexp/train/. Modules without a test file of their own, and the tests that cover them:

- callbacks.py: train/test_periodic_checkpoints.py, train/test_resume_checkpoints.py
- checkpoints.py: cli/test_cli.py, cli/test_evaluate.py, eval/test_clip_benchmark.py, objectives/test_siglip.py ...
- datamodule.py: data/sources/test_csv.py, data/sources/test_webdataset.py, data/test_augment.py, data/test_bad_samples_ranks.py ...
- loggers.py: train/test_loggers_wandb.py, train/test_resume_checkpoints.py
- model_opts.py: test_notices.py, train/test_scale_units.py
- module.py: encoders/test_pretrained_small.py, eval/metrics/test_retrieval.py, eval/test_clip_benchmark.py, eval/test_finegrained.py ...
- progress.py: train/test_report_conventions.py
- report.py: eval/test_finegrained.py, train/test_report_conventions.py
- run.py: cli/test_cli.py, cli/test_evaluate.py, cli/test_user_errors.py, data/sources/test_csv.py ...
- slurm.py: test_safe_loading.py, train/test_periodic_checkpoints.py, train/test_resume_checkpoints.py, train/test_scale_units.py
- sweep.py: test_config_validation.py, train/test_loggers_wandb.py, train/test_scale_units.py, train/test_scale_wandb.py
"""
