#!/usr/bin/env bash
# TOnICS curriculum vs random minibatches, the whole experiment in one command:
#   experiments/tonics_curriculum/run.sh [--parallel 2] [--logger wandb] [--num-train N] \
#       [--batch-size B] [--epochs E] [--num-test N] [run overrides...]
# Prints its CPU-time estimate first, trains the runs (under multirun/tonics_curriculum/,
# reused when re-run), then writes results.md and tonics_curriculum.png next to this file.
# Options: run.py --help.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec .venv/bin/python experiments/tonics_curriculum/run.py "$@"
