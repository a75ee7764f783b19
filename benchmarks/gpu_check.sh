#!/usr/bin/env bash
# One prepared GPU check (< 10 min on one H100): the benchmark harness on OLMo-1B's real shape
# (OLMo architecture, hidden 2048, 16 layers, 16 heads, intermediate 8192, vocabulary 50304, tied
# embeddings; random init, nothing downloaded) in bfloat16, batch 8 x 512, every variant (trunk floor
# and reference forward included) plus the diagnostics, the MMLU prefix-cache check (small shape), the
# evaluation speed check (realistic when ../shared/data/semeval25 or ./shared/data/semeval25 is there:
# a small-shape model memorizing a slice of it, batched vs --official-compat, 256 new tokens, items/s
# per stage: generation, answer NLL, MIA, MMLU; else demo-size), and the scaling sweep (ours vs seed_style over sequence length, vocabulary, answer fraction; CUDA peak memory).
# Writes benchmarks/results/olmo-1b-cuda.json, scaling-cuda.json and scaling-cuda.png (with the GPU's
# name as nvidia-smi reports it) and copies them to $OUT when that is set.
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
PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} timeout 560 "$PY" benchmarks/bench.py --shape olmo-1b --device cuda \
  --dtype bfloat16 --steps 10 --warmup 2 --threads 4 --device-name "$NAME" \
  --variants sft_floor,seed_style,ours,ours_no_cache,ours_no_divergence,ours_gc,sft_floor_gc,ours_topk,trunk_floor,ref_forward \
  --mmlu small --scaling --note "gpu_check.sh (one GPU, nothing else running)" --out "$RESULT"
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT"
  cp "$RESULT" benchmarks/results/scaling-cuda.json benchmarks/results/scaling-cuda.png "$OUT/"
fi
echo "gpu_check: done -> $RESULT"
