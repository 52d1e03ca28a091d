"""The OpenAI-compatible HTTP API behind api.py: ``build_api(engine, settings, rag)`` returns a FastAPI app.

``GET /v1/models``, ``POST /v1/chat/completions`` (plain and streamed as server-sent events ending in
``data: [DONE]``) and ``GET /health``, shaped like OpenAI's API field for field, so the official ``openai``
client and every tool built on it work unchanged. A thin layer over utils/inference/engine.py: each request becomes
one engine request, and the engine's batcher generates concurrent requests together.

- Messages: an optional leading ``system`` (or ``developer``) message — it replaces the template's system
  text — then ``user`` and ``assistant`` turns alternating, ending with ``user``. Content is a string or a
  list of text parts.
- Sampling: ``temperature`` (default: the server's, 0 = greedy), ``top_p``, ``seed``, ``stop`` (up to 4
  strings, added to the template's own next-turn markers), ``max_tokens``/``max_completion_tokens``;
  extensions (as vLLM's): ``top_k``, ``repetition_penalty``. ``n`` must be 1.
- Errors are OpenAI's error object ``{"error": {"message", "type", "param", "code"}}``: 400 for malformed
  JSON, unknown fields, bad values and roles (``param`` names the field) and prompts over the context (with
  the token counts); 401 for a missing or wrong key; 404 for an unknown model or path; 503 when the queue is
  full (with ``Retry-After``).
- ``--rag``: statutes are retrieved for the last user turn and the answer's citations checked; the result
  comes in an extra top-level field ``lawgpt`` (``articles``, ``citations``, ``citation_summary``) — in a
  stream, on the chunk that carries the finish reason. OpenAI clients keep such fields as extras.
- Isolation: a streaming client that disconnects cancels its request at the next token, a plain one within
  ``DISCONNECT_CHECK_S``; bodies over ``max_body_bytes`` get 413 before they are read whole; retrieval and
  tokenisation run on worker threads, never on the event loop; a request whose settings fail fails alone.
- A web page cannot drive the API: requests with an ``Origin`` other than the server's own or ``--cors_origins``
  get 403, and api.py on a loopback address serves only loopback ``Host`` names (DNS rebinding).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from utils.common.errors import ConfigError
from utils.inference.engine import Engine, GenerationParams, ParamError, QueueFullError
from utils.inference.openai_request import APIError, ChatRequest, bad_value, parse_json, parse_request, read_body
from utils.model.prompter import TemplateError

DISCONNECT_CHECK_S = 0.25  # how often a plain request's connection is checked while its answer is generated
@dataclass(frozen=True)
class APISettings:
    model_name: str
    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()
    default_max_tokens: int = 512  # when a request gives none (capped by what the context leaves)
    defaults: GenerationParams = field(default_factory=GenerationParams)  # server-side sampling defaults
    rag_top_k: int = 3
    rag_retriever: str = "auto"
    max_body_bytes: int = 1 << 20  # a request body beyond this is refused (413) before it is read whole
    allowed_hosts: tuple[str, ...] | None = None  # Host header names served (None: any); api.py: loopback names

    def __post_init__(self) -> None:
        if "*" in self.cors_origins:
            raise ConfigError("--cors_origins '*' would let any web page use the API: list the origins instead")
        if self.default_max_tokens < 1:
            raise ConfigError("--default_max_tokens must be >= 1")


def prepare_prompt(engine: Engine, chat: ChatRequest, rag, settings: APISettings):
    """(rag context or None, prompt, prompt tokens) for a parsed request; runs on a worker thread."""
    try:  # a chat template may refuse a conversation (e.g. no system role); an empty question has no statutes
        context = rag.prepare(chat.question, settings.rag_top_k, retriever=settings.rag_retriever) if rag else None
        instruction, material = (context.instruction, context.input) if context else (chat.question, None)
        prompt = engine.prompt(instruction, material, chat.history, chat.system)
    except (TemplateError, ValueError) as e:
        raise APIError(400, str(e), param="messages") from e
    return context, prompt, engine.count_tokens(prompt)


# ---------------------------------------------------------------- responses


def _usage(gen) -> dict:
    return {"prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.new_tokens,
            "total_tokens": gen.prompt_tokens + gen.new_tokens}


FINISH = {"eos": "stop", "stop": "stop", "length": "length", "stopped": "stop"}


def _sse(data: dict | str) -> str:
    # ASCII JSON: a raw U+2028 or U+001E inside a string would split the event for clients that split lines
    # the way Python's str.splitlines does (the openai client's SSE decoder does).
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"


class BrowserGuard:
    """DNS rebinding and cross-site requests: a web page must not drive a local API, even one without a key.

    A plain ASGI middleware: starlette's ``BaseHTTPMiddleware`` would hide a client's disconnect from the endpoint
    (``request.is_disconnected()`` stays False), and a plain request's generation would run on after its client left.
    """

    def __init__(self, app, settings: APISettings):
        self.app, self.settings = app, settings

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            if refusal := self.refusal(headers.get("host", ""), headers.get("origin")):
                return await JSONResponse(refusal.body(), status_code=refusal.status)(scope, receive, send)
        await self.app(scope, receive, send)

    def refusal(self, host_header: str, origin: str | None) -> APIError | None:
        host = host_header.rsplit(":", 1)[0].strip("[]").lower() if not host_header.endswith("]") else \
            host_header.strip("[]").lower()
        allowed = self.settings.allowed_hosts
        if allowed is not None and host not in allowed:
            return APIError(400, f"Host {host!r} is not served here (allowed: {', '.join(allowed)}).")
        if origin is not None and origin not in self.settings.cors_origins and \
                origin.split("://", 1)[-1].lower() != host_header.lower():
            return APIError(403, f"Requests from the web page {origin} are not allowed: list it in --cors_origins.")
        return None


def build_api(engine: Engine, settings: APISettings, rag=None):
    """The FastAPI app; serve it with uvicorn (api.py) or any ASGI server."""
    app = FastAPI(title="LaWGPT OpenAI-compatible API", docs_url=None, redoc_url=None, openapi_url=None)
    started = int(time.time())
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])

    @app.exception_handler(APIError)
    async def api_error(request, error: APIError):
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)

    @app.exception_handler(HTTPException)
    async def http_error(request, error: HTTPException):  # unknown paths (404), wrong methods (405)
        return JSONResponse(APIError(error.status_code, str(error.detail)).body(), status_code=error.status_code)

    @app.exception_handler(Exception)
    async def server_error(request, error: Exception):  # a bug: still OpenAI's error object, never plain text
        return JSONResponse(APIError(500, f"internal error: {type(error).__name__}", type="server_error").body(),
                            status_code=500)

    app.add_middleware(BrowserGuard, settings=settings)

    def authorize(request: Request) -> None:
        if settings.api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise APIError(401, "You didn't provide an API key: send it as 'Authorization: Bearer <key>'.",
                           code="invalid_api_key")
        if not hmac.compare_digest(token.encode(), settings.api_key.encode()):
            raise APIError(401, "Incorrect API key provided.", code="invalid_api_key")

    def model_card() -> dict:
        return {"id": settings.model_name, "object": "model", "created": started, "owned_by": "lawgpt"}

    @app.get("/health")
    async def health():  # no key needed: load balancers poll it; says nothing about the requests themselves
        return {"status": "ok", "running": engine.batcher.running, "waiting": engine.batcher.waiting}

    @app.get("/v1/models")
    async def models(request: Request):
        authorize(request)
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str, request: Request):
        authorize(request)
        if model_id != settings.model_name:
            raise APIError(404, f"The model `{model_id}` does not exist.", param="model", code="model_not_found")
        return model_card()

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        authorize(request)
        body = parse_json(await read_body(request, settings.max_body_bytes))
        chat = parse_request(body, settings.model_name)
        # Retrieval and tokenisation take milliseconds to seconds: on a worker thread, so /health and other
        # requests are never queued behind a long prompt.
        context, prompt, n_prompt = await asyncio.to_thread(prepare_prompt, engine, chat, rag, settings)
        limit = engine.context_length
        max_tokens = chat.max_tokens or max(1, min(settings.default_max_tokens, (limit or 10**9) - n_prompt))
        if limit is not None and n_prompt + max_tokens > limit:
            raise APIError(400, f"This model's maximum context length is {limit} tokens. However, you requested "
                                f"{n_prompt + max_tokens} tokens ({n_prompt} in the messages, {max_tokens} in the "
                                "completion). Please reduce the length of the messages or completion.",
                           param="messages", code="context_length_exceeded")
        defaults = settings.defaults
        if "temperature" in chat.options and chat.options["temperature"] > 0:  # OpenAI's sampling defaults
            defaults = defaults.replace(top_p=1.0, top_k=0)
        try:
            params = defaults.replace(**chat.options, max_new_tokens=max_tokens,
                                      stop=tuple(engine.prompter.stop) + chat.stop)
        except ParamError as e:  # the engine's one rule for every front end (types, ranges)
            raise bad_value(e.field, f"Invalid value for '{e.field}': {e}") from e
        loop, events = asyncio.get_running_loop(), asyncio.Queue()

        def listener(kind, value):  # called on the batcher thread
            if kind == "text" and not chat.stream:
                return  # a plain request waits for the end; text events would only delay its disconnect checks
            try:
                loop.call_soon_threadsafe(events.put_nowait, (kind, value))
            except RuntimeError:  # the event loop is gone (server shutting down): nobody is waiting
                pass

        try:
            handle = await asyncio.to_thread(engine.submit, prompt, params, listener)
        except QueueFullError as e:
            raise APIError(503, f"The server is busy: {e}", type="server_error", code="server_overloaded",
                           headers={"Retry-After": "1"}) from e
        reply_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        base = {"id": reply_id, "created": created, "model": settings.model_name, "system_fingerprint": None}

        def extras(gen) -> dict:
            if context is None:
                return {}
            checked = rag.finalize(gen.text, context)
            return {"lawgpt": {k: checked[k] for k in ("articles", "citations", "citation_summary")}}

        if chat.stream:
            return StreamingResponse(_stream(events, handle, base, chat.include_usage, extras),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        try:
            while True:
                try:
                    kind, value = await asyncio.wait_for(events.get(), timeout=DISCONNECT_CHECK_S)
                except asyncio.TimeoutError:
                    if await request.is_disconnected():
                        return JSONResponse({}, status_code=499)  # nobody to answer; finally frees the slot
                    continue
                if kind == "error":
                    raise generation_error(value)
                if kind == "done":
                    break
        finally:
            handle.cancel()
        gen = value
        message = {"role": "assistant", "content": gen.text, "refusal": None}
        choice = {"index": 0, "message": message, "finish_reason": FINISH[gen.finish_reason], "logprobs": None}
        return {**base, "object": "chat.completion", "choices": [choice], "usage": _usage(gen), **extras(gen)}

    return app


def generation_error(error: BaseException) -> APIError:
    """A request's generation error as the API's error: an engine's own status where it has one (``--engine openai``:
    502 upstream failed, 504 upstream silent, 400 a request the upstream refused, 503 upstream busy), a ParamError's
    field as 400, else 500."""
    if isinstance(error, ParamError):
        return bad_value(error.field, f"Invalid value for '{error.field}': {error}")
    status = getattr(error, "status", 500)
    kind = "invalid_request_error" if status == 400 else "server_error"
    return APIError(status, f"generation failed: {type(error).__name__}: {error}", type=kind)


async def _stream(events: asyncio.Queue, handle, base: dict, include_usage: bool, extras):
    """Server-sent events: a role chunk, content deltas, the finish chunk, extras/usage chunks, [DONE]."""
    def chunk(choices: list, **more) -> str:
        return _sse({**base, "object": "chat.completion.chunk", "choices": choices, **more})

    def delta(content: dict, finish: str | None = None) -> str:
        return chunk([{"index": 0, "delta": content, "finish_reason": finish, "logprobs": None}])

    sent = ""
    try:
        yield delta({"role": "assistant", "content": ""})
        while True:
            kind, value = await events.get()
            if kind == "text":
                if value.startswith(sent) and len(value) > len(sent):
                    yield delta({"content": value[len(sent):]})
                    sent = value
            elif kind == "error":
                yield _sse(generation_error(value).body())
                break
            else:
                gen = value
                # the extras ride on the finish chunk, which has a choice: a chunk with choices [] would break
                # clients that read chunk.choices[0] on every chunk (openai/openai-python #1266)
                yield chunk([{"index": 0, "delta": {}, "finish_reason": FINISH[gen.finish_reason], "logprobs": None}],
                            **extras(gen))
                if include_usage:
                    yield chunk([], usage=_usage(gen))
                break
        yield _sse("[DONE]")
    finally:
        handle.cancel()  # a client that went away mid-stream frees its place in the batch at the next token
