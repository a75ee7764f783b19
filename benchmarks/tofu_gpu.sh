#!/usr/bin/env bash
# TOFU in the published setting (Llama-3.2-1B-Instruct, forget10) on one GPU. Not run by this project
# (no GPU, no hub access here): a prepared command list, paths as variables.
#
# Target = Llama-3.2-1B-Instruct fine-tuned on TOFU full; retain model = the same fine-tuned on retain90.
# Either (a) give BASE (a local copy of Llama-3.2-1B-Instruct): both are fine-tuned here with
# `llm-unlearn finetune` (the peer framework's recipe: 5 epochs, lr 1e-5, batch 32), on the text
# "Question: {q}\nAnswer: {a}", and evaluated in that format (--prompt-format qa); or (b) give TARGET
# and RETAIN, e.g. the peer framework's released checkpoints (open-unlearning/tofu_Llama-3.2-1B-Instruct_full
# and ..._retain90, fine-tuned with the chat template), downloaded beforehand; they are evaluated with
# their chat template (--prompt-format auto).
set -euo pipefail
TOFU=${TOFU:-../shared/data/tofu}
OUT=${OUT:-runs/tofu-gpu}
SPLIT=forget10
if [[ -n "${BASE:-}" ]]; then
    FORMAT=qa
    TARGET=$OUT/target RETAIN=$OUT/retain90
    llm-unlearn finetune --model "$BASE" --data "$TOFU" --split full --epochs 5 --lr 1e-5 --batch-size 32 \
        --output-dir "$TARGET"
    llm-unlearn finetune --model "$BASE" --data "$TOFU" --split retain90 --epochs 5 --lr 1e-5 --batch-size 32 \
        --output-dir "$RETAIN"
else
    FORMAT=auto
    TARGET=${TARGET:?set BASE, or TARGET and RETAIN}
    RETAIN=${RETAIN:?set RETAIN to the retain90 model directory}
fi
EVAL=(evaluate --benchmark tofu --data "$TOFU" --forget-split $SPLIT --prompt-format $FORMAT --batch-size 32)

# 1. the retain model's items: the reference for forget quality and privleak
llm-unlearn "${EVAL[@]}" --model "$RETAIN" --output-dir "$OUT/eval-retain"
REF="$OUT/eval-retain/tofu_items.jsonl"
# 2. the target before unlearning
llm-unlearn "${EVAL[@]}" --model "$TARGET" --retain-reference "$REF" --output-dir "$OUT/eval-target"
# 3. unlearn forget10 (retain90 as the retain set): default preset, then NPO only
llm-unlearn train --model "$TARGET" --data "$TOFU" --split $SPLIT --training-arg bf16=true \
    --output-dir "$OUT/unlearned-default"
llm-unlearn train --model "$TARGET" --data "$TOFU" --split $SPLIT --training-arg bf16=true \
    --set objective.retain_weight=0 --set objective.divergence_weight=0 --retain-per-forget 0 --output-dir "$OUT/unlearned-npo"
# 4. evaluate both (adapter on the target, not merged)
for v in default npo; do
    llm-unlearn "${EVAL[@]}" --model "$TARGET" --adapter "$OUT/unlearned-$v/adapter" \
        --retain-reference "$REF" --output-dir "$OUT/eval-$v"
done
