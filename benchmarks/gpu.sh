#!/usr/bin/env bash
# Step-overhead and host-sync benchmarks on one CUDA GPU with bf16 autocast, then the mmcv _ext ops (benchmarks/ops_2d.py)
# against torchvision on the GPU; about 4-5 minutes on an H100.
#
#   bash benchmarks/gpu.sh                  # defaults below
#   STEPS=200 REPEATS=2 bash benchmarks/gpu.sh
#
# Prints the markdown tables of benchmarks/step_overhead.py, host_syncs.py and ops_2d.py; paste them, with the GPU
# line printed first, into benchmarks/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -n "${PYTHON:-}" ]]; then
    PY="$PYTHON"
elif [[ -x .venv/bin/python ]]; then
    PY=.venv/bin/python
else
    PY=python
fi
STEPS=${STEPS:-300}
REPEATS=${REPEATS:-3}
BATCH=${BATCH:-16}
THREADS=${THREADS:-4}

"$PY" - <<'PY'
import sys

import torch

if not torch.cuda.is_available():
    sys.exit("benchmarks/gpu.sh needs a CUDA GPU (torch.cuda.is_available() is False)")
print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
PY

start=$SECONDS
"$PY" benchmarks/step_overhead.py --device cuda --precision bf16-mixed --batch-size "$BATCH" --steps "$STEPS" \
    --repeats "$REPEATS" --threads "$THREADS"
echo
"$PY" benchmarks/host_syncs.py --device cuda --precision bf16-mixed --batch-size "$BATCH" --steps 25 \
    --log-interval 10 --variants detlight,plain
echo
"$PY" benchmarks/ops_2d.py --device cuda --repeats 20
echo
echo "gpu.sh took $((SECONDS - start)) s"
