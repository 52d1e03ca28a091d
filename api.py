"""An OpenAI-compatible HTTP API for a LaWGPT model (see utils/inference/api_app.py), on http://127.0.0.1:8000/v1.

    python api.py --base_model models/lawgpt-demo
    python api.py --lora_weights outputs/sft-x --rag                   # + retrieved statutes and citation checks
    python api.py --base_model models/base_models/qwen-instruct --prompt_template chat   # the model's own template
    LAWGPT_API_KEY=secret python api.py --base_model models/lawgpt-demo --host 0.0.0.0   # open to the network
    bash scripts/api.sh

Then any OpenAI client: ``OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="secret")`` with
``model=<the served name>`` (``GET /v1/models`` lists it; ``--served_model_name`` sets it, default: the
model directory's name). Concurrent requests are generated together (utils/inference/batching.py):
``--max_batch_size`` at once, ``--max_queue`` waiting (more get 503). Safe by default: loopback only, no
CORS; ``--api_key`` (or LAWGPT_API_KEY) is required as a Bearer token when given. For serving beyond one
machine, run the merged model with ``vllm serve`` — its tokenizer carries the chat template it was trained with.
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from utils.common.entry import fire_entry  # noqa: E402
from utils.common.errors import ConfigError  # noqa: E402
from utils.inference.engine import GenerationParams  # noqa: E402
from utils.inference.frontend import ModelOptions, RetrievalOptions, open_engine, with_model_flags  # noqa: E402

API_KEY_ENV = "LAWGPT_API_KEY"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")  # Host header names (port and [] of IPv6 taken off)


def served_name(base_model: str | None, lora_weights: str | None) -> str:
    return Path(lora_weights or base_model or "lawgpt").resolve().name


@with_model_flags
def main(
    system_prompt: str | None = None,
    served_model_name: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    cors_origins: str = "",
    max_batch_size: int = 16,
    max_queue: int = 64,
    batch_wait_ms: float = 30.0,
    batching: str = "auto",
    default_max_tokens: int = 512,
    temperature: float = 0.0,
    repetition_penalty: float = 1.1,
    log_level: str = "info",
    max_body_mb: float = 1.0,
    *,
    model: ModelOptions,
    retrieval: RetrievalOptions,
) -> None:
    """Serve the model until Ctrl+C. With --rag, replies carry the retrieved articles and the answer's citation
    checks in the field ``lawgpt``.

    Args:
        system_prompt: default system text when a request has no system message (default: the template's).
        served_model_name: the model id clients send (default: the model directory's name).
        host: address to listen on (127.0.0.1 = this machine only).
        port: port to listen on.
        api_key: required Bearer token (default: the LAWGPT_API_KEY environment variable; none if unset).
        cors_origins: comma-separated browser origins allowed to call the API (default: none; '*' is refused).
        max_batch_size: requests generated together at most.
        max_queue: requests that may wait (more: 503).
        batch_wait_ms: a batch starts once no request arrived for this long (10x at most after the first).
        batching: --engine hf: auto = a request that arrives while a batch runs joins it at the next token (models
            with plain or sliding-window attention; utils/inference/iteration.py); batch = it waits for the batch.
        default_max_tokens: answer length when a request sets no max_tokens.
        temperature: default when a request sets none (0 = greedy).
        repetition_penalty: default when a request sets none (1.0 = off).
        log_level: uvicorn's log level.
        max_body_mb: request bodies larger than this are refused (413) before they are read whole.
    """
    import uvicorn

    from utils.inference.api_app import APISettings, build_api

    if not model.base_model and not model.lora_weights:
        raise ConfigError("--base_model (or --lora_weights) is required: a local model directory")
    if not (isinstance(port, int) and 0 <= port <= 65535):
        raise ConfigError(f"--port {port} must be in 0..65535")
    if not max_body_mb > 0:
        raise ConfigError(f"--max_body_mb {max_body_mb} must be > 0")
    key = api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None
    origins = tuple(o.strip() for o in str(cors_origins).split(",") if o.strip())
    settings = APISettings(served_model_name or served_name(model.base_model, model.lora_weights), key, origins,
                           default_max_tokens,
                           GenerationParams(temperature=temperature, repetition_penalty=repetition_penalty),
                           retrieval.rag_top_k, retrieval.rag_retriever, max_body_bytes=int(max_body_mb * 2**20),
                           # on a loopback address only loopback Host names: a web page cannot reach it by DNS rebinding
                           allowed_hosts=LOOPBACK_NAMES if host in LOOPBACK else None)
    engine, rag_module = open_engine(model, retrieval, "api", system_prompt=system_prompt,
                                     max_batch_size=max_batch_size, max_queue=max_queue, batch_wait_ms=batch_wait_ms,
                                     batching=batching)
    if rag_module:  # auto resolved once: every request to this server uses the same retriever
        settings = replace(settings, rag_retriever=rag_module.resolve_retriever(settings.rag_retriever))
    if host not in LOOPBACK and key is None:
        print(f"[api] WARNING: listening on {host} without an API key: anyone who can reach it can use the model "
              f"(set {API_KEY_ENV} or --api_key)", file=sys.stderr, flush=True)
    app = build_api(engine, settings, rag_module)
    print(f"[api] serving {settings.model_name!r} ({engine.loaded.base_model}, template {engine.prompter.name}) on "
          f"http://{host}:{port}/v1" + (" (API key required)" if key else ""), flush=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level)


def run() -> None:
    sys.exit(fire_entry("api", main))


if __name__ == "__main__":
    run()
