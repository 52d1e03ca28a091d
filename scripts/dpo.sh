#!/usr/bin/env bash
# Preference tuning (dpo.py, trl's DPOTrainer) on top of an SFT model. Variables on top, one command.
#   bash scripts/dpo.sh                                   # a merged SFT model + pairs from tools/preference_data.py
#   SFT_ADAPTER=outputs/sft-legal BASE_MODEL=models/base_models/legal-base bash scripts/dpo.sh   # base + SFT adapter
#   NPROC=8 bash scripts/dpo.sh        # torchrun;   extra flags go to dpo.py, e.g. --loss_type ipo --beta 0.5
# Then: LORA_MODEL=outputs/dpo-legal OUTPUT_DIR=models/lawgpt-legal-dpo bash scripts/merge.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
export WANDB_MODE="${WANDB_MODE:-disabled}"

BASE_MODEL="${BASE_MODEL:-models/lawgpt-legal}"     # merged SFT model (scripts/merge.sh), or the base of SFT_ADAPTER
SFT_ADAPTER="${SFT_ADAPTER:-}"                      # empty: a new LoRA on BASE_MODEL
DATA="${DATA:-data/pref/store.jsonl}"               # python tools/preference_data.py --output data/pref/store.jsonl
OUTPUT_DIR="${OUTPUT_DIR:-outputs/dpo-legal}"
NPROC="${NPROC:-1}"

LAUNCH=(python)
[ "$NPROC" -gt 1 ] && LAUNCH=(torchrun --nproc_per_node="$NPROC" --master_port=1235)

"${LAUNCH[@]}" dpo.py \
    --base_model "$BASE_MODEL" \
    ${SFT_ADAPTER:+--sft_adapter "$SFT_ADAPTER"} \
    --data_path "$DATA" \
    --output_dir "$OUTPUT_DIR" \
    --beta 0.1 \
    --loss_type sigmoid \
    --learning_rate 5e-5 \
    --batch_size 16 \
    --micro_batch_size 2 \
    --num_epochs 1 \
    --cutoff_len 512 \
    --val_set_size 100 \
    --lora_r 8 \
    --lora_alpha 16 \
    --lora_target_modules "[q_proj,v_proj]" \
    --resume_from_checkpoint "$OUTPUT_DIR" \
    "$@"
