"""``--engine openai``: the weights run in any OpenAI-compatible server (vLLM, SGLang, llama.cpp's server, Ollama,
``transformers serve``); everything above the engine stays ours.

The prompt is built here exactly as for ``--engine hf`` (our template or the tokenizer's chat template, ``--rag``'s
articles, the system prompt the model was trained with) and sent as a streamed **completion** request
(``POST {url}/completions``, ``stream: true``), so the server applies no chat template of its own. The answer comes
back as text deltas: stop markers, the held-back tail that may still become one, think blocks and cancellation are
handled here as for our own engine (utils/inference/stopping.py), so streaming, ``--rag`` citation verdicts and the
API's ``lawgpt`` field work unchanged. Closing the stream is how a cancelled request stops the server's work (vLLM,
SGLang and ``transformers serve`` abort a request whose client went away).

Settings that the OpenAI schema lacks go in the fields each server reads (:data:`EXTRA_FIELDS`; the server kind is
read from ``owned_by`` of ``GET /models``, or given with ``--engine_server``). A setting the server has no field for is
sent without it, and the log says so once: answers may then differ from ``--engine hf``. The repetition penalty is
counted over the answer alone by our engine and vLLM, over the prompt too by llama.cpp (its last 64 tokens) and
``transformers serve``.

Errors: an upstream that cannot be reached, answers with an error status, or sends nothing for ``timeout`` seconds
ends the request with :class:`UpstreamError` (its ``status``: 502, 504, or the upstream's 4xx), never a hang.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from utils.common.errors import ConfigError, LawgptError, ParamError
from utils.inference.batching import Generation, QueueFullError, Request
from utils.inference.stopping import held_back, without_thinking

SERVER_KINDS = ("auto", "vllm", "sglang", "llama.cpp", "transformers", "generic")
MAX_STOPS = 4  # OpenAI's limit on ``stop``; the rest are matched here, on the streamed text
CONNECT_TIMEOUT_S = 10.0


class UpstreamError(LawgptError, RuntimeError):
    """The upstream server failed a request: ``status`` is the HTTP status our API answers with (502 unreachable or
    failed, 504 silent for too long, the upstream's own 4xx for a request it refused)."""

    def __init__(self, message: str, status: int = 502, upstream_status: int | None = None):
        super().__init__(message)
        self.status, self.upstream_status = status, upstream_status  # the server's own status, when it answered

    @property
    def answered(self) -> bool:
        """The server was reached and sent an error status."""
        return self.upstream_status is not None


def _vllm_fields(p) -> dict:
    return {"repetition_penalty": p.repetition_penalty, "top_k": p.top_k or -1, "min_tokens": p.min_new_tokens,
            "ignore_eos": p.ignore_eos, "stream_options": {"include_usage": True}}


def _llama_cpp_fields(p) -> dict:
    # min_p 0: llama.cpp samples with min_p 0.05 by default, which we do not have
    return {"repeat_penalty": p.repetition_penalty, "top_k": p.top_k, "min_p": 0.0, "min_tokens": p.min_new_tokens,
            "ignore_eos": p.ignore_eos}


def _transformers_fields(p) -> dict:
    # transformers serve refuses unknown fields (422) but takes a whole GenerationConfig as JSON
    config = {"max_new_tokens": p.max_new_tokens, "do_sample": p.sampling, "repetition_penalty": p.repetition_penalty,
              "no_repeat_ngram_size": p.no_repeat_ngram_size, "min_new_tokens": p.min_new_tokens or None}
    if p.sampling:
        config.update(temperature=p.temperature, top_p=p.top_p, top_k=p.top_k or None)
    return {"generation_config": json.dumps({k: v for k, v in config.items() if v is not None})}


# server kind -> (extra request fields for a GenerationParams, the settings those fields carry)
EXTRA_FIELDS = {
    "vllm": (_vllm_fields, {"repetition_penalty", "top_k", "min_new_tokens", "ignore_eos"}),
    "sglang": (_vllm_fields, {"repetition_penalty", "top_k", "min_new_tokens", "ignore_eos"}),
    "llama.cpp": (_llama_cpp_fields, {"repetition_penalty", "top_k", "min_new_tokens", "ignore_eos"}),
    "transformers": (_transformers_fields, {"repetition_penalty", "no_repeat_ngram_size", "top_k", "min_new_tokens"}),
    "generic": (lambda p: {}, set()),
}
OWNERS = {"vllm": "vllm", "sglang": "sglang", "llamacpp": "llama.cpp", "llama.cpp": "llama.cpp"}


def _off(p) -> dict:
    """The settings that change nothing at these values (so a server without the field gives the same answer)."""
    return {"repetition_penalty": p.repetition_penalty == 1.0, "no_repeat_ngram_size": p.no_repeat_ngram_size == 0,
            "top_k": not p.sampling or p.top_k == 0, "min_new_tokens": p.min_new_tokens == 0,
            "ignore_eos": not p.ignore_eos}


@dataclass
class TextStream:
    """One request's answer as its text arrives (the text-level twin of batching._Row), for engines that hand back
    text: stop markers, the held-back tail, think blocks; :meth:`finish` sends the Generation."""

    request: Request
    started: float
    raw: str = ""
    shown: str = ""

    def cut(self) -> str:
        text = self.raw
        for marker in self.request.stops:
            text = text.split(marker, 1)[0]
        return without_thinking(text)

    def add(self, delta: str) -> bool:
        """Take a text delta; True when a stop marker ended the answer."""
        self.raw += delta
        if any(m in self.raw for m in self.request.stops):
            return True
        answer = self.cut()
        answer = answer[: len(answer) - held_back(answer, self.request.stops)].strip()
        if answer != self.shown and answer.startswith(self.shown):
            self.shown = answer
            self.request._emit("text", answer)
        return False

    def finish(self, reason: str, tokenizer, prompt_tokens: int | None = None, new_tokens: int | None = None) -> None:
        """Send the final text and the Generation; token counts default to ours (the answer re-tokenised)."""
        answer = self.cut().strip()
        if answer != self.shown:
            self.request._emit("text", answer)
        ids = tokenizer(self.raw, add_special_tokens=False)["input_ids"] if self.raw else []
        seconds = time.perf_counter() - self.started
        self.request._emit("done", Generation(answer, prompt_tokens or len(self.request.ids), new_tokens or len(ids),
                                              reason, seconds, ids))


class OpenAIUpstream:
    """The engine's backend (the interface of batching.Batcher: submit, close, running, waiting, busy) over an
    OpenAI-compatible server; up to ``max_concurrency`` requests in flight (the server batches them), ``max_queue``
    more waiting. Raises UpstreamError at construction when ``GET {url}/models`` fails, ConfigError when ``model`` is
    not served there (or several are and none is named)."""

    def __init__(self, engine, url: str, model: str | None = None, api_key: str | None = None, timeout: float = 120.0,
                 server: str = "auto", max_concurrency: int = 16, max_queue: int = 64):
        import httpx

        if server not in SERVER_KINDS:
            raise ConfigError(f"--engine_server {server!r}: choose one of {', '.join(SERVER_KINDS)}")
        if timeout <= 0 or max_concurrency < 1 or max_queue < 1:
            raise ConfigError("--engine_timeout must be > 0, max_batch_size and max_queue >= 1")
        self.engine, self.url, self.timeout = engine, url.rstrip("/"), timeout
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(headers=headers, timeout=httpx.Timeout(timeout, connect=CONNECT_TIMEOUT_S),
                                   limits=httpx.Limits(max_connections=max_concurrency + 2))
        self.model, owner = self._probe(model)
        self.server = OWNERS.get(owner, "generic") if server == "auto" else server
        self.max_concurrency, self.max_queue = max_concurrency, max_queue
        self.pool = ThreadPoolExecutor(max_concurrency, thread_name_prefix="lawgpt-upstream")
        self._lock = threading.Lock()
        self.running = self._waiting = 0
        self._warned: set[str] = set()
        self._closed = False

    @property
    def device(self) -> str:
        return f"{self.url} ({self.server}, model {self.model})"

    @property
    def waiting(self) -> int:
        return self._waiting

    @property
    def busy(self) -> bool:
        return self.running > 0 or self._waiting > 0

    def _probe(self, model: str | None) -> tuple[str | None, str]:
        """(model name, owned_by) from GET /models. A server that is up but cannot list its models
        (``transformers serve`` without a hub cache answers 500) is used with ``model`` as named, or none: a server
        serving one model takes requests without a name."""
        try:
            response = self._call("GET", "/models")
        except UpstreamError as e:
            if e.upstream_status in (401, 403):
                raise ConfigError(f"the engine at {self.url} refused our key ({e.upstream_status}): pass its key with "
                                  "--engine_api_key or LAWGPT_ENGINE_API_KEY") from e
            if not e.answered:
                raise
            print(f"[engine] warning: {e}; going on with --engine_model {model!r}", file=sys.stderr, flush=True)
            return model, ""
        try:
            served = {card["id"]: str(card.get("owned_by", "")) for card in response.json()["data"]}
        except (ValueError, KeyError, TypeError) as e:
            raise UpstreamError(f"{self.url}/models did not answer with an OpenAI model list: {e}") from e
        if model is not None:
            if served and model not in served:
                raise ConfigError(f"--engine_model {model!r} is not served by {self.url} (it serves: "
                                  f"{', '.join(sorted(served))})")
            return model, served.get(model, "")
        if len(served) != 1:
            raise ConfigError(f"{self.url} serves {len(served)} models ({', '.join(sorted(served)) or 'none'}): "
                              "name one with --engine_model")
        return next(iter(served.items()))

    def _call(self, method: str, path: str, **kwargs):
        import httpx

        try:
            # its own connection: a server that failed the call may close it, and a pooled one would then be reset
            with httpx.Client(headers=self.client.headers, timeout=self.client.timeout) as client:
                response = client.request(method, self.url + path, **kwargs)
                response.read()
        except httpx.TimeoutException as e:
            raise UpstreamError(f"the engine at {self.url} sent nothing for {self.timeout:g} s ({type(e).__name__})",
                                504) from e
        except httpx.HTTPError as e:
            raise UpstreamError(f"cannot reach the engine at {self.url}: {type(e).__name__}: {e} — start it "
                                "(scripts/serve.sh) or fix --engine_url") from e
        if response.status_code >= 400:
            raise _status_error(response, self.url + path)
        return response

    # ------------------------------------------------------------ the backend interface

    def submit(self, requests: list[Request], gather: bool = True) -> None:
        """Start each request as soon as a connection is free (``gather`` does not apply: the server batches)."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the engine is closed")
            if self._waiting + len(requests) > self.max_queue + self.max_concurrency - self.running:
                raise QueueFullError(f"{self._waiting} requests are waiting (the limit is {self.max_queue}): "
                                     "try again later")
            self._waiting += len(requests)
        for request in requests:
            if request.params.num_beams > 1:
                request._emit("error", ParamError("num_beams", "beam search runs on --engine hf only"))
                with self._lock:
                    self._waiting -= 1
                continue
            self.pool.submit(self._serve, request)

    def close(self, timeout: float = 0) -> None:
        with self._lock:
            self._closed = True
        self.pool.shutdown(wait=bool(timeout), cancel_futures=True)
        self.client.close()

    # ------------------------------------------------------------ one request

    def body(self, request: Request) -> dict:
        """The completion request for ``request`` (its prompt text and settings; see the module docstring)."""
        p = request.params
        body = {"prompt": self._prompt_text(request), "max_tokens": p.max_new_tokens, "stream": True,
                "temperature": p.temperature if p.sampling else 0.0, "top_p": p.top_p if p.sampling else 1.0}
        if self.model is not None:
            body["model"] = self.model
        if p.seed is not None:
            body["seed"] = p.seed
        if request.stops:
            body["stop"] = list(request.stops[:MAX_STOPS])
        fields, carried = EXTRA_FIELDS[self.server]
        body.update(fields(p))
        for name, off in _off(p).items():
            if not off and name not in carried and name not in self._warned:
                self._warned.add(name)
                print(f"[engine] warning: the upstream ({self.server} at {self.url}) has no field for {name}="
                      f"{getattr(p, name)!r}: sent without it, so answers may differ from --engine hf "
                      "(--engine_server names the server kind)", file=sys.stderr, flush=True)
        return body

    def _prompt_text(self, request: Request) -> str:
        # The server tokenises the text and adds BOS itself; a chat template already wrote BOS as text.
        prompt = request.prompt
        bos = self.engine.tokenizer.bos_token
        if not self.engine.prompter.add_special_tokens and bos and prompt.startswith(bos):
            prompt = prompt[len(bos):]
        return prompt

    def _serve(self, request: Request) -> None:
        with self._lock:
            self._waiting -= 1
            self.running += 1
        stream = TextStream(request, time.perf_counter())
        try:
            if request.cancelled.is_set():
                return self._finish(stream, "stopped", None)
            self._stream(stream)
        except Exception as e:  # this request alone fails; the others go on
            if not request.finished.is_set():
                request._emit("error", e if isinstance(e, LawgptError) else UpstreamError(f"{type(e).__name__}: {e}"))
        finally:
            with self._lock:
                self.running -= 1

    def _stream(self, stream: TextStream, retry: bool = True) -> None:
        import httpx

        request = stream.request
        finish, usage = None, None
        try:
            with self.client.stream("POST", self.url + "/completions", json=self.body(request)) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _status_error(response, self.url + "/completions")
                for line in response.iter_lines():
                    if request.cancelled.is_set():
                        return self._finish(stream, "stopped", usage)
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        finish = finish or "eos"
                        break
                    chunk = json.loads(data)
                    if "error" in chunk:
                        error = chunk["error"]
                        raise UpstreamError(f"the engine at {self.url} failed mid-answer: "
                                            f"{error.get('message', error) if isinstance(error, dict) else error}")
                    usage = chunk.get("usage") or usage
                    for choice in chunk.get("choices") or []:
                        if stream.add(choice.get("text") or ""):
                            return self._finish(stream, "stop", usage)
                        if choice.get("finish_reason"):
                            stop_reason = choice.get("stop_reason")
                            finish = "length" if choice["finish_reason"] == "length" else \
                                "stop" if isinstance(stop_reason, str) else "eos"
        except httpx.TimeoutException as e:
            raise UpstreamError(f"the engine at {self.url} sent nothing for {self.timeout:g} s", 504) from e
        except httpx.HTTPError as e:
            if retry and not stream.raw and isinstance(e, (httpx.ReadError, httpx.RemoteProtocolError)):
                return self._stream(stream, retry=False)  # a kept-alive connection the server had closed: once more
            raise UpstreamError(f"lost the engine at {self.url}: {type(e).__name__}: {e}") from e
        if finish is None:  # no finish_reason: the connection ended mid-answer (a server restarted or killed)
            raise UpstreamError(f"lost the engine at {self.url}: the stream ended before the answer did")
        self._finish(stream, finish, usage)

    def _finish(self, stream: TextStream, reason: str, usage: dict | None) -> None:
        usage = usage or {}
        stream.finish(reason, self.engine.tokenizer, usage.get("prompt_tokens"), usage.get("completion_tokens"))


def _status_error(response, where: str) -> UpstreamError:
    """The upstream's error status as ours: a request it found invalid (400, 413, 422) is the client's 400; busy (429,
    503) is our 503; anything else, its key or model refused included, is our 502 (the client's request was fine)."""
    try:
        error = response.json().get("error") or response.json().get("detail") or response.text
    except ValueError:
        error = response.text
    message = error.get("message", error) if isinstance(error, dict) else error
    status = {400: 400, 413: 400, 422: 400, 429: 503, 503: 503}.get(response.status_code, 502)
    return UpstreamError(f"the engine at {where} answered {response.status_code}: {str(message)[:300]}", status,
                         response.status_code)
