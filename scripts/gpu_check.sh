#!/usr/bin/env bash
# One GPU check (issue 18): gpu-marked tests + SFT/GRPO/generation/solver/FAISS timings -> one JSON.
#   scripts/gpu_check.sh            on a CUDA machine (writes benchmarks/results/gpu_check.json)
#   scripts/gpu_check.sh --cpu      the same plumbing, tiny, on the CPU
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
test -x "$PY" || PY=python3
exec "$PY" scripts/gpu_check.py "$@"
