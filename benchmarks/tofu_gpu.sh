#!/usr/bin/env bash
# TOFU in the published setting (Llama-3.2-1B-Instruct, forget10) on one GPU. Not run by this project
# (no GPU, no hub access here): a prepared command list, paths as variables.
#
# TARGET: Llama-3.2-1B-Instruct fine-tuned on TOFU full; RETAIN: the same fine-tuned on retain90 only.
# Either fine-tune them with `llm-unlearn finetune` (when available), or use the peer framework's
# released checkpoints (open-unlearning/tofu_Llama-3.2-1B-Instruct_full and ..._retain90), downloaded
# beforehand to local directories.
set -euo pipefail
TOFU=${TOFU:-../shared/data/tofu}
TARGET=${TARGET:?set TARGET to the fine-tuned target model directory}
RETAIN=${RETAIN:?set RETAIN to the retain90 model directory}
OUT=${OUT:-runs/tofu-gpu}
SPLIT=forget10

# 1. the retain model's items: the reference for forget quality and privleak
llm-unlearn evaluate --benchmark tofu --model "$RETAIN" --data "$TOFU" --forget-split $SPLIT \
    --batch-size 32 --output-dir "$OUT/eval-retain"
REF="$OUT/eval-retain/tofu_items.jsonl"
# 2. the target before unlearning
llm-unlearn evaluate --benchmark tofu --model "$TARGET" --data "$TOFU" --forget-split $SPLIT \
    --retain-reference "$REF" --batch-size 32 --output-dir "$OUT/eval-target"
# 3. unlearn forget10 (retain90 as the retain set): default preset, then NPO only
llm-unlearn train --model "$TARGET" --data "$TOFU" --split $SPLIT --training-arg bf16=true \
    --output-dir "$OUT/unlearned-default"
llm-unlearn train --model "$TARGET" --data "$TOFU" --split $SPLIT --training-arg bf16=true \
    --set objective.rt_mult=0 --set objective.renyi_mult=0 --positive-ratio 0 --output-dir "$OUT/unlearned-npo"
# 4. evaluate both (adapter on the target, not merged)
for v in default npo; do
    llm-unlearn evaluate --benchmark tofu --model "$TARGET" --adapter "$OUT/unlearned-$v/adapter" \
        --data "$TOFU" --forget-split $SPLIT --retain-reference "$REF" --batch-size 32 --output-dir "$OUT/eval-$v"
done
