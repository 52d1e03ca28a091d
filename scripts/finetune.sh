#!/usr/bin/env bash
# LoRA instruction tuning (finetune.py). Variables on top, one command. The original LaWGPT
# scripts/finetune.sh also still works as it was (same flags).
# Multi-GPU: NPROC=8 bash scripts/finetune.sh      QLoRA: bash scripts/finetune.sh --load_4bit True
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
export WANDB_MODE="${WANDB_MODE:-disabled}"

BASE_MODEL="${BASE_MODEL:-models/base_models/legal-base}"   # merged continued-pretraining model
DATA="${DATA:-data/instruct/train.jsonl}"                    # from tools/knowledge_instruct.py etc.
OUTPUT_DIR="${OUTPUT_DIR:-outputs/sft-legal}"
TEMPLATE="${TEMPLATE:-law_template}"
NPROC="${NPROC:-1}"

LAUNCH=(python)
[ "$NPROC" -gt 1 ] && LAUNCH=(torchrun --nproc_per_node="$NPROC" --master_port=1234)

"${LAUNCH[@]}" finetune.py \
    --base_model "$BASE_MODEL" \
    --data_path "$DATA" \
    --output_dir "$OUTPUT_DIR" \
    --batch_size 64 \
    --micro_batch_size 8 \
    --num_epochs 3 \
    --learning_rate 3e-4 \
    --cutoff_len 512 \
    --val_set_size 200 \
    --lora_r 8 \
    --lora_alpha 16 \
    --lora_dropout 0.05 \
    --lora_target_modules "[q_proj,v_proj]" \
    --train_on_inputs False \
    --add_eos_token True \
    --group_by_length True \
    --resume_from_checkpoint "$OUTPUT_DIR" \
    --prompt_template_name "$TEMPLATE" \
    "$@"
