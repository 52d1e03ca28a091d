#!/usr/bin/env bash
# Answer the questions of a data file in batches (or chat interactively) — see infer.py --help.
#   bash scripts/infer.sh                                        # the variables below
#   LORA_WEIGHTS=outputs/sft-legal BASE_MODEL= bash scripts/infer.sh --batch_size 16   # an adapter
#   INFER_DATA_PATH= bash scripts/infer.sh                       # interactive mode
#   bash scripts/infer.sh --rag --rag_retriever hybrid           # statutes in the prompt (BM25 + e5; see docs/retrieval.md)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
source scripts/env.sh

BASE_MODEL="${BASE_MODEL-models/lawgpt-demo}"  # what scripts/demo.sh makes; empty: from $LORA_WEIGHTS/run_info.json
LORA_WEIGHTS="${LORA_WEIGHTS:-}"                # an adapter directory, or empty
PROMPT_TEMPLATE="${PROMPT_TEMPLATE:-}"          # empty: the adapter's (run_info.json), else law_template
INFER_DATA_PATH="${INFER_DATA_PATH-resources/example_infer_data.json}"
OUTPUT_PATH="${OUTPUT_PATH:-outputs/infer/example_infer_data.jsonl}"

python infer.py \
    ${BASE_MODEL:+--base_model "$BASE_MODEL"} \
    ${LORA_WEIGHTS:+--lora_weights "$LORA_WEIGHTS"} \
    ${PROMPT_TEMPLATE:+--prompt_template "$PROMPT_TEMPLATE"} \
    --infer_data_path "$INFER_DATA_PATH" \
    --output_path "$OUTPUT_PATH" \
    --batch_size 8 \
    "$@"
