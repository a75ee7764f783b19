#!/usr/bin/env bash
# One prepared GPU check (< 8 min on one H100): the benchmark harness on OLMo-1B's real shape
# (OLMo architecture, hidden 2048, 16 layers, 16 heads, intermediate 8192, vocabulary 50304, tied
# embeddings; random init, nothing downloaded) in bfloat16, batch 8 x 512, every variant plus the
# diagnostics, and the evaluation speed check. Writes benchmarks/results/olmo-1b-cuda.json (with the
# GPU's name as nvidia-smi reports it) and copies it to $OUT when that is set.
#
#   bash benchmarks/gpu_check.sh            # from the repository root, with the venv or torch+package installed
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi >/dev/null 2>&1; then
  echo "gpu_check: no NVIDIA GPU visible (nvidia-smi failed)" >&2
  exit 2
fi
NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1)
echo "gpu_check: $NAME"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
RESULT=benchmarks/results/olmo-1b-cuda.json
PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} timeout 460 "$PY" benchmarks/bench.py --shape olmo-1b --device cuda \
  --dtype bfloat16 --steps 10 --warmup 2 --threads 4 --device-name "$NAME" \
  --variants sft_floor,seed_style,ours,ours_no_cache,ours_no_divergence,ours_gc,sft_floor_gc,ours_topk,trunk_floor,ref_forward \
  --out "$RESULT"
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT"
  cp "$RESULT" "$OUT/"
fi
echo "gpu_check: done -> $RESULT"
