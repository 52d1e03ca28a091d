#!/usr/bin/env bash
# Continued pretraining on the statute corpus (train_clm.py). Variables on top, one command.
# Multi-GPU: NPROC=8 bash scripts/train_clm.sh   (add DEEPSPEED=scripts/ds_zero2.json for large models)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

BASE_MODEL="${BASE_MODEL:-models/base_models/gemma-3-270m}"
TOKENIZER="${TOKENIZER:-models/tokenizers/legal}"        # from tools/merge_vocabulary.py; unset to keep the base one
DATA="${DATA:-data/pretrain/statutes.jsonl}"             # from tools/build_corpus.py
OUTPUT_DIR="${OUTPUT_DIR:-outputs/clm-legal}"
NPROC="${NPROC:-1}"
DEEPSPEED="${DEEPSPEED:-}"

LAUNCH=(python)
[ "$NPROC" -gt 1 ] && LAUNCH=(torchrun --nproc_per_node="$NPROC" --master_port=1235)
EXTRA=()
[ -n "$TOKENIZER" ] && EXTRA+=(--tokenizer_path "$TOKENIZER")
[ -n "$DEEPSPEED" ] && EXTRA+=(--deepspeed "$DEEPSPEED")

"${LAUNCH[@]}" train_clm.py \
    --base_model "$BASE_MODEL" \
    --data_path "$DATA" \
    --output_dir "$OUTPUT_DIR" \
    --batch_size 128 \
    --micro_batch_size 8 \
    --num_epochs 1 \
    --learning_rate 3e-4 \
    --block_size 1024 \
    --val_set_size 200 \
    --lora_r 16 \
    --lora_alpha 32 \
    --lora_dropout 0.05 \
    --lora_target_modules '[q_proj, v_proj, k_proj, o_proj]' \
    --gradient_checkpointing True \
    --resume_from_checkpoint "$OUTPUT_DIR" \
    "${EXTRA[@]}" "$@"
