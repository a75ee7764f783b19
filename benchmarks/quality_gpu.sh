#!/usr/bin/env bash
# The quality benchmark on a GPU with a real model (OLMo-2 1B or 7B shapes, bf16): prepared, not run here
# (no GPU was lent to the session that wrote it). The model must be a local directory (no hub access at run
# time), e.g. a download of allenai/OLMo-2-0425-1B-Instruct or allenai/OLMo-2-1124-7B-Instruct.
#
#   MODEL=/models/OLMo-2-0425-1B-Instruct bash benchmarks/quality_gpu.sh
#
# Fine-tunes the model on a larger slice (48 member units with their documents and 150 other records,
# whole units) until it has memorized it, then runs every preset and the calibrated default with the presets' own step sizes in bf16, and writes
# benchmarks/results/quality-gpu.json with one entry per run (and the evaluation directories beside it).
# For a 7B model add --training-arg gradient_checkpointing=true through the presets, or use LoRA fine-tuning.
set -euo pipefail
: "${MODEL:?set MODEL to a local model directory}"
cd "$(dirname "$0")/.."
.venv/bin/python benchmarks/quality.py --model "$MODEL" --dtype bfloat16 --members "${MEMBERS:-48}" \
    --limit "${LIMIT:-150}" --holdout "${HOLDOUT:-100}" --threads 8 --work runs/quality-gpu "$@"
