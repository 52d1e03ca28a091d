"""``--engine``: which engine runs the weights behind the one :class:`~utils.inference.engine.Engine` (LLaMA-Factory's
``infer_backend`` idea). Everything above it — templates and chat templates, ``--rag`` and citation verdicts, the
API's ``lawgpt`` field, streaming, stop strings, cancellation — is the same for all four:

- ``hf`` (default): transformers in this process, our batcher (utils/inference/batching.py);
- ``openai``: any OpenAI-compatible server at ``--engine_url`` (utils/inference/upstream.py);
- ``llama.cpp``: llama-cpp-python in this process on ``--gguf`` (utils/inference/llama_cpp_engine.py);
- ``vllm``: vLLM in this process on GPUs (utils/inference/vllm_engine.py).

The engines other than ``hf`` read the prompt side (tokenizer, run_info.json's template and system prompt, context
length, end-of-turn ids) from ``--base_model``, the merged model directory; adapters must be merged first
(merge_lora.py), as vLLM and llama.cpp serve merged weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from utils.common.errors import ConfigError

ENGINES = ("hf", "openai", "llama.cpp", "vllm")


@dataclass(frozen=True)
class EngineChoice:
    """The ``--engine*`` flags (see :data:`HELP` for each)."""

    engine: str = "hf"
    engine_url: str | None = None
    engine_model: str | None = None
    engine_api_key: str | None = None
    engine_server: str = "auto"
    engine_timeout: float = 120.0
    gguf: str | None = None
    engine_threads: int | None = None
    engine_ctx: int | None = None
    engine_tensor_parallel: int = 1


HELP = {
    "engine": "what runs the weights: hf (transformers here, default), openai (an OpenAI-compatible server at "
              "--engine_url: vLLM, SGLang, llama.cpp's server, Ollama, transformers serve), llama.cpp (llama-cpp-python "
              "here on --gguf; bash scripts/install_llama_cpp.sh) or vllm (vLLM here, NVIDIA GPUs)",
    "engine_url": "--engine openai: the server's base URL, e.g. http://127.0.0.1:8001/v1",
    "engine_model": "--engine openai: the model name the server serves (default: its only one)",
    "engine_api_key": "--engine openai: the server's API key, if it wants one (or set LAWGPT_ENGINE_API_KEY)",
    "engine_server": "--engine openai: the server kind, for the settings OpenAI's schema lacks (repetition penalty, "
                     "top_k): auto (from GET /models), vllm, sglang, llama.cpp, transformers or generic",
    "engine_timeout": "--engine openai: seconds without a byte from the server before a request fails (504)",
    "gguf": "--engine llama.cpp: the .gguf file (tools/export_gguf.py) of the --base_model directory",
    "engine_threads": "--engine llama.cpp: CPU threads (default: llama.cpp's choice)",
    "engine_ctx": "--engine llama.cpp: context window in tokens (default: the model's, at most 8192)",
    "engine_tensor_parallel": "--engine vllm: GPUs to split the model over (vLLM's tensor_parallel_size)",
}


def check_choice(choice: EngineChoice, lora_weights: str | None) -> None:
    """One-line ConfigError for flags that do not fit together (before any model is loaded)."""
    if choice.engine not in ENGINES:
        raise ConfigError(f"--engine {choice.engine!r}: choose one of {', '.join(ENGINES)}")
    if choice.engine != "hf" and lora_weights:
        raise ConfigError(f"--engine {choice.engine} serves merged weights: merge the adapter first "
                          f"(python merge_lora.py --lora_model {lora_weights} --output_dir …) and pass that --base_model")
    if choice.engine == "openai" and not choice.engine_url:
        raise ConfigError("--engine openai needs --engine_url, e.g. http://127.0.0.1:8001/v1 (scripts/serve.sh's engine)")
    if choice.engine == "llama.cpp" and not choice.gguf:
        raise ConfigError("--engine llama.cpp needs --gguf FILE (tools/export_gguf.py writes one)")
    if choice.engine == "llama.cpp" and not Path(choice.gguf).is_file():  # before retrieval and the tokenizer load
        raise ConfigError(f"--gguf {choice.gguf}: no such file (write one with tools/export_gguf.py)")
    misplaced = {"openai": ("engine_url", "engine_model", "engine_api_key"), "llama.cpp": ("gguf", "engine_threads",
                                                                                           "engine_ctx")}
    for engine, names in misplaced.items():
        for name in names:
            if getattr(choice, name) is not None and choice.engine != engine:
                raise ConfigError(f"--{name} belongs to --engine {engine}, not --engine {choice.engine}")


def backend_factory(choice: EngineChoice, max_batch_size: int = 16, max_queue: int = 64):
    """``backend(engine)`` for the Engine, or None for ``hf`` (its own batcher)."""
    import os

    if choice.engine == "openai":
        from utils.inference.upstream import OpenAIUpstream

        key = choice.engine_api_key or os.environ.get("LAWGPT_ENGINE_API_KEY")
        return lambda engine: OpenAIUpstream(engine, choice.engine_url, choice.engine_model, key,
                                             choice.engine_timeout, choice.engine_server, max_batch_size, max_queue)
    if choice.engine == "llama.cpp":
        from utils.inference.llama_cpp_engine import LlamaCppBackend

        return lambda engine: LlamaCppBackend(engine, choice.gguf, choice.engine_threads, choice.engine_ctx, max_queue)
    if choice.engine == "vllm":
        from utils.inference.vllm_engine import VLLMBackend

        return lambda engine: VLLMBackend(engine, choice.engine_tensor_parallel, max(max_queue, 256))
    return None
