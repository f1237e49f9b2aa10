#!/usr/bin/env bash
# SoftAlign vs CLIP under caption noise, the whole experiment in one command:
#   bash experiments/softalign_noise/run.sh [--steps 250] [--parallel 2] [--logger wandb] [overrides...]
# Prints its CPU-time estimate first, trains the grid (runs under multirun/softalign_noise/,
# reused when re-run), runs the step benchmark and writes results.md and
# paired_differences.png next to this file. Options: run.py --help.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec .venv/bin/python experiments/softalign_noise/run.py "$@"
