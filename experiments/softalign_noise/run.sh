#!/usr/bin/env bash
# SoftAlign vs CLIP under caption noise: 2 objectives x 3 noise levels x 2 seeds = 12 runs
# (a Hydra multirun, run one after another), then the results table.
#   bash experiments/softalign_noise/run.sh            (from anywhere; runs in the repo root)
# Runs go to multirun/softalign_noise/<job number>/ (git-ignored; each has metrics.json);
# SWEEP_DIR=... puts them elsewhere; STEPS=... sets the training length (default 400;
# results_120steps.md came from STEPS=120 SWEEP_DIR=multirun/softalign_noise_120
# OUT=experiments/softalign_noise/results_120steps.md). The budget is reduced (README.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
SWEEP_DIR=${SWEEP_DIR:-multirun/softalign_noise}
STEPS=${STEPS:-400}
OUT=${OUT:-experiments/softalign_noise/results.md}
.venv/bin/python -m vlexp.run -m experiment=softalign \
  objective=clip,softalign \
  data.source.noisy_caption_frac=0.0,0.2,0.4 \
  seed=0,1 \
  logger=csv viz.enabled=false \
  data.source.num_train=4000 data.source.num_val=200 data.source.num_test=500 \
  data.source.num_test_compositional=250 \
  data.batch_size=64 data.eval_batch_size=128 data.num_workers=1 \
  trainer.max_steps="$STEPS" trainer.val_check_interval="$STEPS" optim.warmup_steps=10 \
  hydra.sweep.dir="$SWEEP_DIR"
.venv/bin/python experiments/softalign_noise/collect.py "$SWEEP_DIR" \
  --out "$OUT"
