#!/usr/bin/env bash
# sampler=random vs sampler=tonics on the synthetic data, same budget, pre-trained towers
# (experiment=tonics), seeds 0 and 1; then the results table. Usage, from anywhere:
#   experiments/tonics_curriculum/run.sh [SWEEP_DIR]      (default multirun/tonics_curriculum)
# Budget per run (4 runs, sequential): 6400 train pairs, batch 64, 100 steps = exactly one
# epoch (each pair seen once), validation once at the end; test
# on 500 images (+250 compositional, 500 fine-grained with 4 distractors each). One torch
# thread per run: on the 2 shared CPU cores of the dev machine 2 threads thrash (5-9 s/step
# under load vs ~1.5 s with 1). Measured: 31 min for the 4 runs at load average 6-9.
set -euo pipefail
cd "$(dirname "$0")/../.."
SWEEP_DIR="${1:-multirun/tonics_curriculum}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}"
.venv/bin/python -m vlexp.run -m experiment=tonics sampler=random,tonics seed=0,1 \
  logger=csv viz.enabled=false \
  data.source.num_train=6400 data.source.num_val=200 data.source.num_test=500 \
  data.source.num_test_compositional=250 data.source.finegrained_k=4 \
  data.batch_size=64 data.eval_batch_size=128 data.num_workers=1 \
  trainer.max_steps=100 trainer.val_check_interval=100 optim.warmup_steps=10 \
  "hydra.sweep.dir=${SWEEP_DIR}"
.venv/bin/python experiments/tonics_curriculum/make_table.py "${SWEEP_DIR}" \
  --md experiments/tonics_curriculum/results.md
