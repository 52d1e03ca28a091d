"""An OpenAI-compatible HTTP API for a LaWGPT model (see utils/api_app.py), on http://127.0.0.1:8000/v1.

    python api.py --base_model models/lawgpt-demo
    python api.py --lora_weights outputs/sft-x --rag                   # + retrieved statutes and citation checks
    python api.py --base_model models/base_models/qwen-instruct --prompt_template chat   # the model's own template
    LAWGPT_API_KEY=secret python api.py --base_model models/lawgpt-demo --host 0.0.0.0   # open to the network
    bash scripts/api.sh

Then any OpenAI client: ``OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="secret")`` with
``model=<the served name>`` (``GET /v1/models`` lists it; ``--served_model_name`` sets it, default: the
model directory's name). Concurrent requests are generated together (utils/batching.py):
``--max_batch_size`` at once, ``--max_queue`` waiting (more get 503). Safe by default: loopback only, no
CORS; ``--api_key`` (or LAWGPT_API_KEY) is required as a Bearer token when given. For serving beyond one
machine, run the merged model with ``vllm serve`` — its tokenizer carries the chat template it was trained with.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import fire

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from utils.data import DataError  # noqa: E402
from utils.engine import Engine, GenerationParams  # noqa: E402
from utils.modeling import ModelLoadError  # noqa: E402
from utils.prompter import TemplateError  # noqa: E402

API_KEY_ENV = "LAWGPT_API_KEY"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def served_name(base_model: str | None, lora_weights: str | None) -> str:
    return Path(lora_weights or base_model or "lawgpt").resolve().name


def main(
    base_model: str | None = None,
    lora_weights: str | None = None,
    prompt_template: str | None = None,
    system_prompt: str | None = None,
    served_model_name: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    cors_origins: str = "",
    max_batch_size: int = 16,
    max_queue: int = 64,
    batch_wait_ms: float = 30.0,
    default_max_tokens: int = 512,
    temperature: float = 0.0,
    repetition_penalty: float = 1.1,
    load_8bit: bool = False,
    load_4bit: bool = False,
    device: str = "auto",
    dtype: str = "auto",
    rag: bool = False,
    rag_top_k: int = 3,
    rag_retriever: str = "bm25",
    trust_remote_code: bool = False,
    log_level: str = "info",
) -> None:
    """Serve the model until Ctrl+C.

    Args:
        base_model: model directory (default: from --lora_weights/run_info.json).
        lora_weights: LoRA adapter directory (optional).
        prompt_template: law_template, alpaca, a .json path, or chat = the tokenizer's own chat_template
            (default: the one the model was trained with, else law_template; law_rag with --rag).
        system_prompt: default system text when a request has no system message (default: the template's).
        served_model_name: the model id clients send (default: the model directory's name).
        host: address to listen on (127.0.0.1 = this machine only). port: port to listen on.
        api_key: required Bearer token (default: the LAWGPT_API_KEY environment variable; none if unset).
        cors_origins: comma-separated browser origins allowed to call the API (default: none; '*' is refused).
        max_batch_size: requests generated together at most. max_queue: requests that may wait (more: 503).
        batch_wait_ms: a batch starts once no request arrived for this long (10x at most after the first).
        default_max_tokens: answer length when a request sets no max_tokens.
        temperature: default when a request sets none (0 = greedy). repetition_penalty: default (1.0 = off).
        load_8bit: 8-bit weights (CUDA). load_4bit: 4-bit nf4 weights (CUDA).
        device: auto, cpu, cuda, mps. dtype: auto, float32, bfloat16, float16.
        rag: retrieve statutes for the last user turn and return them and the answer's citation checks (field lawgpt).
        rag_top_k: articles per question with --rag. rag_retriever: bm25 or hybrid (BM25 + e5).
        trust_remote_code: allow model code from the model directory (off by default).
        log_level: uvicorn's log level.
    """
    import uvicorn

    from utils.api_app import APISettings, build_api

    if not base_model and not lora_weights:
        raise ValueError("--base_model (or --lora_weights) is required: a local model directory")
    key = api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None
    origins = tuple(o.strip() for o in str(cors_origins).split(",") if o.strip())
    settings = APISettings(served_model_name or served_name(base_model, lora_weights), key, origins, default_max_tokens,
                           GenerationParams(temperature=temperature, repetition_penalty=repetition_penalty),
                           rag_top_k, rag_retriever)
    rag_module = None
    if rag:
        from utils import rag as rag_module

        rag_module.check_retriever(rag_retriever)  # before the model loads
        rag_module.default_index()
        prompt_template = prompt_template or rag_module.RAG_TEMPLATE
    engine = Engine.from_pretrained(base_model, lora_weights, prompt_template, device=device, dtype=dtype,
                                    load_8bit=load_8bit, load_4bit=load_4bit, trust_remote_code=trust_remote_code,
                                    system_prompt=system_prompt, max_batch_size=max_batch_size, max_queue=max_queue,
                                    batch_wait_ms=batch_wait_ms)
    from utils.rag import missing_rag_warning

    if warning := missing_rag_warning(engine.loaded.prompt_template, rag_module is not None):
        print(f"[api] warning: {warning}", file=sys.stderr, flush=True)
    if host not in LOOPBACK and key is None:
        print(f"[api] WARNING: listening on {host} without an API key: anyone who can reach it can use the model "
              f"(set {API_KEY_ENV} or --api_key)", file=sys.stderr, flush=True)
    app = build_api(engine, settings, rag_module)
    print(f"[api] serving {settings.model_name!r} ({engine.loaded.base_model}, template {engine.prompter.name}) on "
          f"http://{host}:{port}/v1" + (" (API key required)" if key else ""), flush=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level)


def run() -> None:
    try:
        fire.Fire(main)
    except (DataError, ModelLoadError, TemplateError, ValueError, OSError) as e:
        print(f"api: error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    run()
