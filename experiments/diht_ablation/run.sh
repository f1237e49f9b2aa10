#!/usr/bin/env bash
# The DiHT ablation in one command (driver: run.py; its docstring lists the steps).
#   experiments/diht_ablation/run.sh [--sweep-dir DIR] [--steps 300] [--num-train 4000]
#       [--parallel 2] [--logger csv|wandb] [--detailed]
# Prints its CPU-time estimate first; finished runs under the sweep directory
# (default multirun/diht_ablation, git-ignored) are reused, so an interrupted run resumes.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec .venv/bin/python experiments/diht_ablation/run.py "$@"
