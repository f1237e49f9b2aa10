#!/usr/bin/env bash
# DiHT ablation on the synthetic data: CLIP, +CAT, +concept distillation, +HN-NCE, all,
# all + TOnICS sampler; then the few-shot probe of the `all` run and the results table.
# Usage, from anywhere:
#   experiments/diht_ablation/run.sh [SWEEP_DIR]        (default multirun/diht_ablation)
#   SEEDS="0 2" experiments/diht_ablation/run.sh        (seeds; default "0 2"; not 1, the
#                                                        teacher's data seed)
#   STEPS=150 experiments/diht_ablation/run.sh [DIR]     (training steps per run; default 400;
#                                                        a DIR holds runs of one step count)
#   NOISE_SEEDS="2 3" experiments/diht_ablation/run.sh  (also the CLIP row with these seeds,
#       in SWEEP_DIR/noise: the seed-to-seed spread; ~2.6 min each, off by default)
# Steps (a finished step's outputs are reused, so an interrupted run resumes):
#   1. the synthetic teacher: a small CNN on the synthetic object classes, trained on the
#      seed-1 train split (images disjoint from the ablation's seed-0 split), 2 epochs;
#   2. the 6 training runs, one after another (overrides: ablation.py; budget per run:
#      4000 train pairs, batch 64, STEPS steps, one torch thread);
#   3. the few-shot curve of the `all` run's last checkpoint (vlexp.eval.fewshot);
#   4. what CAT keeps on this data, per threshold choice (cat_check.md; OCRs all 4000
#      training images, ~4 min);
#   5. results.md and fewshot.png in experiments/diht_ablation/.
set -euo pipefail
cd "$(dirname "$0")/../.."
SWEEP_DIR="${1:-multirun/diht_ablation}"
SEEDS="${SEEDS:-0 2}"
STEPS="${STEPS:-400}"
NOISE_SEEDS="${NOISE_SEEDS:-}"
PY=.venv/bin/python
HERE=experiments/diht_ablation
TEACHER="${SWEEP_DIR}/teacher/synthetic_seed1.pt"
# one torch thread per process: the 2 shared CPU cores thrash with more
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}"
stamp() { echo "[$(date +%H:%M:%S) +${SECONDS}s] $*"; }

stamp "1. teacher -> ${TEACHER}"
if [ ! -f "${TEACHER}" ]; then
  mkdir -p "$(dirname "${TEACHER}")"
  "${PY}" -m vlexp.cli.teacher action=train-synthetic "out=${TEACHER}" seed=1 epochs=2 \
    max_seconds=100000 quiet=true "hydra.run.dir=${SWEEP_DIR}/teacher" \
    hydra.job_logging.root.level=WARNING \
    | tee "${SWEEP_DIR}/teacher/info.json"
fi

stamp "2. ablation runs -> ${SWEEP_DIR}/<row>/seed<k>"
# shellcheck disable=SC2086  # SEEDS is a list
"${PY}" "${HERE}/ablation.py" run --out "${SWEEP_DIR}" --teacher "${TEACHER}" --seeds ${SEEDS} \
  --steps "${STEPS}"

if [ -n "${NOISE_SEEDS}" ]; then
  stamp "2b. seed-noise probe: CLIP row, seeds ${NOISE_SEEDS} -> ${SWEEP_DIR}/noise"
  # shellcheck disable=SC2086
  "${PY}" "${HERE}/ablation.py" run --out "${SWEEP_DIR}/noise" --teacher "${TEACHER}" \
    --rows clip --seeds ${NOISE_SEEDS} --steps "${STEPS}"
fi

stamp "3. few-shot probe of ${SWEEP_DIR}/all/seed0"
if [ ! -f "${SWEEP_DIR}/fewshot/fewshot.json" ]; then
  "${PY}" "${HERE}/ablation.py" fewshot-config --run "${SWEEP_DIR}/all/seed0" \
    --out "${SWEEP_DIR}/fewshot/config.yaml"
  "${PY}" -m vlexp.cli.fewshot "ckpt=${SWEEP_DIR}/all/seed0/checkpoints/last.ckpt" \
    "config=${SWEEP_DIR}/fewshot/config.yaml" "ks=[0,1,2,4,8,16]" "seeds=[0,1,2,3,4]" \
    "out=${SWEEP_DIR}/fewshot/fewshot.json"
fi

stamp "4. CAT check -> ${HERE}/cat_check.md"
if [ ! -f "${SWEEP_DIR}/cat_check.md" ]; then
  "${PY}" "${HERE}/cat_check.py" --num-train 4000 --md "${SWEEP_DIR}/cat_check.md" > /dev/null
fi
cp "${SWEEP_DIR}/cat_check.md" "${HERE}/cat_check.md"

stamp "5. tables -> ${HERE}/results.md, plot -> ${HERE}/fewshot.png"
"${PY}" "${HERE}/make_table.py" "${SWEEP_DIR}" --md "${HERE}/results.md" \
  --plot "${HERE}/fewshot.png"
stamp "done"
