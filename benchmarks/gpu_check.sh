#!/usr/bin/env bash
# One GPU check, all sections, in under 10 minutes on one H200 (see benchmarks/gpu_check.py):
# vlexp vs open_clip_train samples/s (bf16), torch.compile off/on, the local loss's peak
# memory at the largest batch that fits, a 1-GPU DDP run (NCCL), every precision with
# every objective, the concept teacher's images/s. From a clean checkout:
#
#   make install        # PyPI's Linux torch wheels are CUDA builds; else set TORCH_SPEC=...
#   benchmarks/gpu_check.sh [--out benchmarks/results/gpu_check.md]
#   benchmarks/gpu_check.sh --device cpu --quick      # the same sections, tiny, on CPU
#
# The report is printed and written to --out (default outputs/gpu_check/<device>-<time>.md)
# with a .json alongside; the exit status is 1 when any section failed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
if [ ! -x "$PY" ]; then
  echo "no $PY: run 'make install' first (on a GPU machine with TORCH_SPEC set to a CUDA build)" >&2
  exit 2
fi
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
exec "$PY" benchmarks/gpu_check.py "$@"
