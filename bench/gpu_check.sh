#!/usr/bin/env bash
# The GPU measurements of issue 21 (point 6) in one run: bf16 tokens/s and MFU of the trainer against a plain loop
# on the minicpm-1.2b shape (4 layers) and the 0.1B ladder shape, peak memory against the dry run's estimate, and a
# 30-step `windtunnel launch` on 1 worker; writes bench/results/gpu.json. Under 8 minutes on one H100.
#   bash bench/gpu_check.sh          # needs one NVIDIA GPU and a Python with CUDA torch + windtunnel's dependencies
#   bash bench/gpu_check.sh --dry    # anywhere: the same steps on the CPU with tiny shapes (bench/results/gpu_dry.json)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
if [ "${1:-}" != "--dry" ]; then nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv || true; fi
exec "$PY" bench/gpu_check.py "$@"
