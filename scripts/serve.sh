#!/usr/bin/env bash
# Scale-out: a serving engine runs the merged model, our API (or web UI) in front of it with --engine openai, so
# retrieval, the law_rag prompt and the citation checks stay ours (docs/engines.md: what runs where).
#   bash scripts/serve.sh                                  # GPUs here and vllm installed: vLLM over all of them;
#                                                          # else llama.cpp's server on the CPU (GGUF exported once)
#   ENGINE=vllm TP=2 bash scripts/serve.sh                 # vLLM, --tensor-parallel-size 2
#   ENGINE=llama.cpp GGUF_TYPE=f16 bash scripts/serve.sh   # llama.cpp on an f16 GGUF (default q8_0)
#   FRONT=webui bash scripts/serve.sh                      # the web UI on :7860 in front instead of the API on :8000
#   MODEL=models/lawgpt-legal bash scripts/serve.sh -- --rag_top_k 5   # after --: flags for api.py / webui.py
# The engine listens on 127.0.0.1:$ENGINE_PORT only (our front end is the one door); it stops when this script does.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
source scripts/env.sh

MODEL="${MODEL:-models/lawgpt-demo}"    # a merged model directory (merge_lora.py's output)
ENGINE="${ENGINE:-auto}"                # auto | vllm | llama.cpp
FRONT="${FRONT:-api}"                   # api | webui
ENGINE_PORT="${ENGINE_PORT:-8001}"
TP="${TP:-}"                            # vLLM's --tensor-parallel-size (default: every GPU)
GGUF_TYPE="${GGUF_TYPE:-q8_0}"          # llama.cpp: f32 | f16 | bf16 | q8_0
GGUF="${GGUF:-$MODEL.$GGUF_TYPE.gguf}"
THREADS="${THREADS:-$(nproc)}"
WAIT_S="${WAIT_S:-900}"                 # how long the engine may take to come up (vLLM loads and compiles)
[ "${1:-}" = "--" ] && shift

[ -d "$MODEL" ] || { echo "[serve] error: MODEL=$MODEL is not a directory (bash scripts/demo.sh builds models/lawgpt-demo)" >&2; exit 1; }
GPUS=$( (nvidia-smi -L 2>/dev/null || true) | grep -c "^GPU" || true)
if [ "$ENGINE" = auto ]; then
  if [ "$GPUS" -gt 0 ] && python -c "import vllm" 2>/dev/null; then ENGINE=vllm; else ENGINE=llama.cpp; fi
fi
URL="http://127.0.0.1:$ENGINE_PORT/v1"
case "$ENGINE" in
  vllm)
    [ "$GPUS" -gt 0 ] || { echo "[serve] error: ENGINE=vllm needs NVIDIA GPUs and none is visible: use ENGINE=llama.cpp" >&2; exit 1; }
    python -c "import vllm" 2>/dev/null || { echo "[serve] error: vllm is not installed: pip install vllm (GPU machines)" >&2; exit 1; }
    TP="${TP:-$GPUS}"
    echo "[serve] vLLM on $TP of $GPUS GPU(s): $MODEL on $URL"
    vllm serve "$MODEL" --host 127.0.0.1 --port "$ENGINE_PORT" --tensor-parallel-size "$TP" --served-model-name lawgpt \
        --generation-config vllm &
    ;;
  llama.cpp)
    bash scripts/install_llama_cpp.sh
    if [ ! -f "$GGUF" ]; then
      echo "[serve] exporting $MODEL to $GGUF (once)"
      python tools/export_gguf.py --model_dir "$MODEL" --output "$GGUF" --outtype "$GGUF_TYPE"
    fi
    echo "[serve] llama.cpp's server on the CPU ($THREADS threads): $GGUF on $URL"
    python -m llama_cpp.server --model "$GGUF" --model_alias lawgpt --host 127.0.0.1 --port "$ENGINE_PORT" \
        --n_ctx 8192 --n_threads "$THREADS" --verbose False &
    ;;
  *) echo "[serve] error: ENGINE=$ENGINE: choose auto, vllm or llama.cpp" >&2; exit 1 ;;
esac
ENGINE_PID=$!
FRONT_PID=
# Whichever way the script ends (Ctrl-C, kill, the front end exiting), both processes go with it.
stop_all() {
  trap - EXIT INT TERM
  kill $FRONT_PID $ENGINE_PID 2>/dev/null || true
  wait $FRONT_PID $ENGINE_PID 2>/dev/null || true
}
trap stop_all EXIT
trap 'stop_all; exit 130' INT
trap 'stop_all; exit 143' TERM

deadline=$(( $(date +%s) + WAIT_S ))
until python -c "import httpx, sys; sys.exit(httpx.get('$URL/models', timeout=2).status_code != 200)" 2>/dev/null; do
  kill -0 $ENGINE_PID 2>/dev/null || { echo "[serve] error: the $ENGINE server exited (see above)" >&2; exit 1; }
  [ "$(date +%s)" -lt "$deadline" ] || { echo "[serve] error: the $ENGINE server did not answer on $URL in $WAIT_S s" >&2; exit 1; }
  sleep 1
done
echo "[serve] $ENGINE is up; starting the $FRONT in front of it"
python "$FRONT.py" --base_model "$MODEL" --engine openai --engine_url "$URL" --engine_model lawgpt \
    --engine_server "$ENGINE" "$@" &
FRONT_PID=$!
wait $FRONT_PID
