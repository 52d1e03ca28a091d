#!/usr/bin/env bash
# Merge a LoRA adapter into its base model (verified: merged vs adapter logits) — see merge_lora.py --help.
# The base model is read from the adapter's run_info.json unless BASE_MODEL is set.
#   bash scripts/merge.sh                                   # the variables below
#   LORA_MODEL=outputs/clm-x OUTPUT_DIR=models/base_models/legal-base bash scripts/merge.sh --overwrite
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
source scripts/env.sh

LORA_MODEL="${LORA_MODEL:-outputs/sft-legal}"     # what scripts/finetune.sh writes
OUTPUT_DIR="${OUTPUT_DIR:-models/lawgpt-legal}"
BASE_MODEL="${BASE_MODEL:-}"   # empty: from $LORA_MODEL/run_info.json

python merge_lora.py \
    --lora_model "$LORA_MODEL" \
    --output_dir "$OUTPUT_DIR" \
    ${BASE_MODEL:+--base_model "$BASE_MODEL"} \
    "$@"
