"""Pluggable text generators for the data tools (self_instruct.py, clean_data.py).

Two backends behind one call, ``generator.complete(prompts, max_new_tokens=…, temperature=…, seed=…)``
→ one completion string per prompt, in order:

- ``local``: a Hugging Face model directory (optionally + LoRA) through ``utils/inference/engine.py``, batched.
  ``use_template=True`` wraps each prompt as the question of the model's prompt template (for an
  instruction-tuned model); ``False`` sends it raw (a base model continuing a text).
- ``openai``: any OpenAI-compatible ``/chat/completions`` endpoint (OpenAI, vLLM, llama.cpp server,
  …) over the standard library's urllib. The key is read from an environment variable
  (``--api_key_env``, default ``OPENAI_API_KEY``) and never printed. Timeouts, retries with
  exponential backoff on connection errors, 429 and 5xx; other HTTP errors fail at once with the
  status and the server's message.

Scripts add the shared options with :func:`add_generator_arguments` and build the backend with
:func:`generator_from_args`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from utils.common.errors import LawgptError
from utils.inference.engines import ENGINES

RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504}


class GeneratorError(LawgptError, RuntimeError):
    """A backend could not produce a completion (bad configuration, HTTP failure, malformed reply)."""


class LocalGenerator:
    """A local model through the engine; prompts run in batches of ``batch_size``."""

    name = "local"

    def __init__(self, engine, use_template: bool = False, batch_size: int = 4, top_p: float = 0.9,
                 repetition_penalty: float = 1.1):
        self.engine = engine
        self.use_template = use_template
        self.batch_size = batch_size
        self.top_p = top_p
        self.repetition_penalty = repetition_penalty

    @classmethod
    def from_pretrained(cls, model_path: str, lora_weights: str | None = None, prompt_template: str | None = None,
                        device: str = "auto", choice=None, **kwargs) -> LocalGenerator:
        """``choice``: the ``--engine*`` flags (utils/inference/engines.EngineChoice; default hf)."""
        from utils.inference.engine import Engine

        return cls(Engine.from_pretrained(model_path, lora_weights, prompt_template, device=device, choice=choice),
                   **kwargs)

    def complete(self, prompts: Sequence[str], max_new_tokens: int = 512, temperature: float = 0.0,
                 seed: int | None = None) -> list[str]:
        from utils.inference.engine import GenerationParams

        params = GenerationParams(
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=self.top_p,
            repetition_penalty=self.repetition_penalty,
            seed=seed,
            # A raw prompt is plain text: the template's next-turn marker means nothing there.
            stop=None if self.use_template else (),
        )
        texts = [self.engine.prompt(p) if self.use_template else p for p in prompts]
        out: list[str | None] = [None] * len(texts)
        for batch in self.engine.generate_batched(texts, params, batch_size=self.batch_size):
            for index, generation in batch:
                out[index] = generation.text
        return out


class OpenAIGenerator:
    """An OpenAI-compatible chat-completions endpoint; ``concurrency`` requests in flight at once."""

    name = "openai"

    def __init__(self, api_base: str, model: str, api_key: str | None = None, timeout: float = 60.0,
                 max_retries: int = 3, backoff: float = 1.0, concurrency: int = 1, system: str | None = None):
        if not api_base.startswith(("http://", "https://")):
            raise GeneratorError(f"--api_base {api_base!r} must start with http:// or https://")
        if not model:
            raise GeneratorError("--model is required with --backend openai (the model name the server serves)")
        for name, ok, rule in (("request_timeout", timeout > 0, "> 0"), ("backoff", backoff >= 0, ">= 0"),
                               ("max_retries", max_retries >= 0, ">= 0"), ("concurrency", concurrency >= 1, ">= 1")):
            if not ok:
                raise GeneratorError(f"--{name} must be {rule}")
        self.url = api_base.rstrip("/") + "/chat/completions"
        self.model = model
        self._api_key = api_key  # never printed, never part of an error message
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.concurrency = concurrency
        self.system = system

    def __repr__(self) -> str:  # keeps the key out of logs and tracebacks
        return f"OpenAIGenerator(url={self.url!r}, model={self.model!r}, api_key={'set' if self._api_key else 'unset'})"

    def _body(self, prompt: str, max_new_tokens: int, temperature: float, seed: int | None) -> dict:
        messages = [{"role": "system", "content": self.system}] if self.system else []
        messages.append({"role": "user", "content": prompt})
        body = {"model": self.model, "messages": messages, "max_tokens": max_new_tokens, "temperature": temperature}
        if seed is not None:
            body["seed"] = seed
        return body

    def _post(self, body: dict) -> dict:
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        last = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    raw = response.read()
            except urllib.error.HTTPError as e:
                detail = _error_detail(e)
                last = f"HTTP {e.code} {e.reason}: {detail}"
                if e.code not in RETRYABLE_STATUS:
                    raise GeneratorError(f"{self.url}: {last}") from e
                continue
            except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
                last = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
                continue
            try:
                return json.loads(raw)
            except json.JSONDecodeError as e:
                raise GeneratorError(f"{self.url}: the reply is not JSON ({e.msg}): {raw[:200]!r}") from e
        raise GeneratorError(f"{self.url}: gave up after {self.max_retries + 1} attempt(s); last error: {last}")

    def _one(self, args: tuple[str, int, float, int | None]) -> str:
        reply = self._post(self._body(*args))
        try:
            content = reply["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as e:
            raise GeneratorError(
                f"{self.url}: unexpected reply shape (want choices[0].message.content): {json.dumps(reply)[:200]}"
            ) from e
        if not isinstance(content, str):
            raise GeneratorError(f"{self.url}: choices[0].message.content is {type(content).__name__}, not text")
        return content

    def complete(self, prompts: Sequence[str], max_new_tokens: int = 512, temperature: float = 0.0,
                 seed: int | None = None) -> list[str]:
        jobs = [(p, max_new_tokens, temperature, None if seed is None else seed + i) for i, p in enumerate(prompts)]
        if self.concurrency == 1 or len(jobs) <= 1:
            return [self._one(job) for job in jobs]
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(self._one, jobs))


def _error_detail(error: urllib.error.HTTPError) -> str:
    """The server's own message (OpenAI style ``{"error": {"message": …}}``) or the start of the body."""
    try:
        body = error.read().decode("utf-8", errors="replace")
    except OSError:
        return "(no body)"
    try:
        message = json.loads(body).get("error", {})
        message = message.get("message") if isinstance(message, dict) else message
        if message:
            return str(message)[:300]
    except (json.JSONDecodeError, AttributeError):
        pass
    return body[:300] or "(empty body)"


# ---------------------------------------------------------------- command-line wiring


def add_generator_arguments(parser: argparse.ArgumentParser, default_template_mode: str) -> None:
    group = parser.add_argument_group("generator backend")
    group.add_argument("--backend", choices=["local", "openai"], default="local",
                       help="local: a model directory through utils/inference/engine.py; openai: an OpenAI-compatible HTTP API")
    group.add_argument("--model_path", help="local: the base model directory (a merged LaWGPT model or a base model)")
    group.add_argument("--lora_weights", help="local: optional LoRA adapter directory on top of --model_path")
    group.add_argument("--prompt_template", default=None,
                       help="local: template for --prompt_mode template (chat = the tokenizer's own chat_template)")
    group.add_argument("--prompt_mode", choices=["raw", "template"], default=default_template_mode,
                       help=f"local: send prompts raw (base models) or as the template's question "
                            f"(instruction-tuned models); default {default_template_mode}")
    group.add_argument("--device", default="auto", help="local: auto | cpu | cuda | mps")
    group.add_argument("--batch_size", type=int, default=4, help="local: prompts generated together")
    group.add_argument("--engine", choices=ENGINES, default="hf",
                       help="local: what runs the weights (docs/engines.md): hf, llama.cpp (--gguf), vllm, or openai "
                            "(--engine_url; our template, the server's weights)")
    group.add_argument("--gguf", help="local, --engine llama.cpp: the .gguf of --model_path (tools/export_gguf.py)")
    group.add_argument("--engine_url", help="local, --engine openai: the server's base URL")
    group.add_argument("--api_base", default="https://api.openai.com/v1",
                       help="openai: base URL; /chat/completions is appended")
    group.add_argument("--model", default=None, help="openai: the model name, e.g. gpt-4o-mini")
    group.add_argument("--api_key_env", default="OPENAI_API_KEY",
                       help="openai: name of the environment variable holding the API key (the key is never printed)")
    group.add_argument("--request_timeout", type=float, default=120.0, help="openai: seconds per request")
    group.add_argument("--max_retries", type=int, default=3, help="openai: retries on connection errors, 429, 5xx")
    group.add_argument("--concurrency", type=int, default=4, help="openai: requests in flight at once")


def generator_from_args(args: argparse.Namespace):
    if args.backend == "local":
        if not args.model_path:
            raise GeneratorError("--model_path is required with --backend local")
        if args.batch_size < 1:
            raise GeneratorError(f"--batch_size {args.batch_size} must be >= 1")
        from utils.inference.engines import EngineChoice

        choice = EngineChoice(args.engine, engine_url=args.engine_url, gguf=args.gguf)
        return LocalGenerator.from_pretrained(
            args.model_path, args.lora_weights, args.prompt_template, device=args.device, choice=choice,
            use_template=args.prompt_mode == "template", batch_size=args.batch_size,
        )
    key = os.environ.get(args.api_key_env) or None
    if key is None:
        # Local OpenAI-compatible servers (vLLM, llama.cpp) accept requests without a key; say so once.
        print(f"[generators] ${args.api_key_env} is not set: sending requests without an API key", file=sys.stderr)
    return OpenAIGenerator(args.api_base, args.model, key, timeout=args.request_timeout,
                           max_retries=args.max_retries, concurrency=args.concurrency)
