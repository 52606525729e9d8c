#!/usr/bin/env bash
# The GPU check on one GPU of a GPU server (under 8 minutes; see docs/gpu.md):
#   bash bench/gpu_check.sh [gpu_check.py options, e.g. --precisions fp32,bf16]
# Times the COCO RetinaNet search and adaptation at the paper's input size and per-GPU batch in
# fp32, fp16 and bf16, writes bench/results/gpu_check.json (the machine named) and re-renders
# docs/benchmarks.md from the stored results. Python: $PYTHON, else the environment of
# scripts/setup_env.sh (created on first use). The GPU: CUDA_VISIBLE_DEVICES (default 0).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
py="${PYTHON:-$(bash scripts/setup_env.sh | tail -n 1)}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES:-0}"
"$py" -c "import torch, sys; torch.cuda.is_available() or sys.exit('gpu_check.sh: no CUDA GPU visible')"
"$py" -c "import torch; print('[gpu_check] GPU:', torch.cuda.get_device_name(0), '| torch', torch.__version__, '| CUDA', torch.version.cuda)"
# a hard stop well past the expected 8 minutes, so a hung data loader cannot hold the GPU
rc=0
timeout 1200 "$py" bench/gpu_check.py "$@" || rc=$?
if [ "$rc" -le 1 ]; then  # 1: a run failed; its reason is in the result, which is rendered
  "$py" bench/make_doc.py
  echo "[gpu_check] done (exit $rc): bench/results/gpu_check.json, docs/benchmarks.md (section 6)"
fi
exit "$rc"
