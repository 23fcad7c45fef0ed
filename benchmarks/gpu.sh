#!/usr/bin/env bash
# One lent GPU, under 5 minutes: check CUDA, then train every model kind for a fixed number of
# steps at the `full` sizes (650 wide, fused cuDNN cells, batch 32 x 35, KJV-sized vocabulary)
# in bf16-mixed and in fp32, printing tokens/s and peak GPU memory as JSON lines.
#   bash benchmarks/gpu.sh            # from the repository root, with .venv or a python that has torch
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$(test -x .venv/bin/python && echo .venv/bin/python || echo python3)}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
PYTHONPATH=. timeout 290 "$PY" benchmarks/gpu_steps.py "$@"
