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
  stream, as one more chunk with no choices before ``[DONE]``. OpenAI clients keep such fields as extras.
- A streaming client that disconnects cancels its request at the next token (its batch slot is free);
  a plain request is cancelled too when its client goes away while waiting.
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

from utils.common.errors import ConfigError, LawgptError
from utils.inference.engine import Engine, GenerationParams, QueueFullError
from utils.model.prompter import TemplateError

ROLES = ("system", "developer", "user", "assistant")
SAMPLING_FIELDS = ("temperature", "top_p", "top_k", "repetition_penalty", "seed")
KNOWN_FIELDS = {"model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens", "stop", "n",
                *SAMPLING_FIELDS}
IGNORED_FIELDS = {"user", "metadata", "store", "service_tier", "parallel_tool_calls"}  # no effect on the answer
# Accepted only with the value that means "off"; anything else is a feature this server does not have.
DEFAULT_ONLY = {"frequency_penalty": 0, "presence_penalty": 0, "logprobs": False, "top_logprobs": 0, "logit_bias": {},
                "tools": [], "tool_choice": "none", "functions": [], "function_call": "none",
                "response_format": {"type": "text"}, "modalities": ["text"], "audio": None, "prediction": None,
                "reasoning_effort": None, "web_search_options": None}


class APIError(LawgptError):
    """An error answered as OpenAI's error object."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclass(frozen=True)
class APISettings:
    model_name: str
    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()
    default_max_tokens: int = 512  # when a request gives none (capped by what the context leaves)
    defaults: GenerationParams = field(default_factory=GenerationParams)  # server-side sampling defaults
    rag_top_k: int = 3
    rag_retriever: str = "bm25"

    def __post_init__(self) -> None:
        if "*" in self.cors_origins:
            raise ConfigError("--cors_origins '*' would let any web page use the API: list the origins instead")
        if self.default_max_tokens < 1:
            raise ConfigError("--default_max_tokens must be >= 1")


@dataclass
class ChatRequest:
    system: str | None
    history: list[tuple[str, str]]
    question: str
    stream: bool = False
    include_usage: bool = False
    max_tokens: int | None = None
    options: dict = field(default_factory=dict)  # GenerationParams fields from the request
    stop: tuple[str, ...] = ()


# ---------------------------------------------------------------- request parsing (no HTTP needed)


def _bad(param: str, message: str) -> APIError:
    return APIError(400, message, param=param, code="invalid_value")


def _number(body: dict, name: str, low: float, high: float, integer: bool = False, low_open: bool = False):
    value = body.get(name)
    if value is None:
        return None
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise _bad(name, f"Invalid type for '{name}': expected {'an integer' if integer else 'a number'}, got "
                         f"{type(value).__name__}.")
    if value < low or value > high or (low_open and value == low):
        bounds = f"{'(' if low_open else '['}{low}, {high}]"
        raise _bad(name, f"Invalid value for '{name}': {value} is not in {bounds}.")
    return value


def _text(content, param: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) for p in content):
        if any(p.get("type") != "text" or not isinstance(p.get("text"), str) for p in content):
            raise _bad(param, f"'{param}': only text content parts ({{'type': 'text', 'text': ...}}) are supported.")
        return "\n".join(p["text"] for p in content)
    raise _bad(param, f"Invalid type for '{param}': expected a string or an array of text parts.")


def parse_messages(messages) -> tuple[str | None, list[tuple[str, str]], str]:
    """(system, [(question, answer)…], last question) from OpenAI messages; 400 naming the field otherwise."""
    if not isinstance(messages, list) or not messages:
        raise _bad("messages", "'messages' must be a non-empty array of messages.")
    system, turns = None, []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise _bad(where, f"Invalid type for '{where}': expected an object.")
        role = message.get("role")
        if role not in ROLES:
            raise _bad(f"{where}.role", f"Invalid value for '{where}.role': {role!r}. Supported values are: "
                                         f"{', '.join(repr(r) for r in ROLES)}.")
        extra = set(message) - {"role", "content", "name"}
        if extra:
            raise _bad(f"{where}.{sorted(extra)[0]}", f"'{where}.{sorted(extra)[0]}' is not supported by this server.")
        if message.get("content") is None:
            raise _bad(f"{where}.content", f"Missing '{where}.content'.")
        text = _text(message["content"], f"{where}.content")
        if role in ("system", "developer"):
            if i != 0:
                raise _bad(f"{where}.role", f"'{where}': a {role} message is only allowed as the first message.")
            system = text
            continue
        expected = "user" if len(turns) % 2 == 0 else "assistant"
        if role != expected:
            raise _bad(f"{where}.role", f"'{where}.role' must be {expected!r} here: after an optional system message, "
                                         "user and assistant messages alternate, starting and ending with user.")
        turns.append(text)
    if len(turns) % 2 == 0:
        raise _bad("messages", "The last message must be a user message.")
    return system, list(zip(turns[0:-1:2], turns[1::2])), turns[-1]


def parse_request(body, model_name: str) -> ChatRequest:
    if not isinstance(body, dict):
        raise APIError(400, "The request body must be a JSON object.")
    for name in body:
        if name in KNOWN_FIELDS or name in IGNORED_FIELDS:
            continue
        if name not in DEFAULT_ONLY:
            raise _bad(name, f"Unrecognized request argument supplied: {name}")
        if body[name] not in (None, DEFAULT_ONLY[name]) and body[name] != []:
            raise _bad(name, f"'{name}' is not supported by this server (only {DEFAULT_ONLY[name]!r}).")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise _bad("model", "You must provide a model parameter (a string).")
    if body["model"] != model_name:
        raise APIError(404, f"The model `{body['model']}` does not exist; this server serves `{model_name}`.",
                       param="model", code="model_not_found")
    system, history, question = parse_messages(body.get("messages"))
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise _bad("stream", "Invalid type for 'stream': expected a boolean.")
    options = body.get("stream_options")
    if options is not None and (not stream or not isinstance(options, dict) or set(options) - {"include_usage"}):
        raise _bad("stream_options", "'stream_options' is only allowed with stream=true and knows only include_usage.")
    if _number(body, "n", 1, 1, integer=True) not in (None, 1):
        raise _bad("n", "Only n=1 is supported.")
    limits = {"temperature": (0, 2, False, False), "top_p": (0, 1, False, True), "top_k": (0, 10**6, True, False),
              "repetition_penalty": (0, 10, False, True), "seed": (-(2**63), 2**63 - 1, True, False)}
    sampling = {name: value for name, (low, high, integer, low_open) in limits.items()
                if (value := _number(body, name, low, high, integer, low_open)) is not None}
    max_tokens = None
    for name in ("max_completion_tokens", "max_tokens"):
        max_tokens = max_tokens or _number(body, name, 1, 10**7, integer=True)
    stop = body.get("stop")
    stop = [stop] if isinstance(stop, str) else stop
    if stop is not None and (not isinstance(stop, list) or len(stop) > 4 or
                             not all(isinstance(s, str) and s for s in stop)):
        raise _bad("stop", "'stop' must be a non-empty string or an array of up to 4 non-empty strings.")
    return ChatRequest(system, history, question, stream, bool((options or {}).get("include_usage")), max_tokens,
                       sampling, tuple(stop or ()))


# ---------------------------------------------------------------- responses


def _usage(gen) -> dict:
    return {"prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.new_tokens,
            "total_tokens": gen.prompt_tokens + gen.new_tokens}


FINISH = {"eos": "stop", "stop": "stop", "length": "length", "stopped": "stop"}


def _sse(data: dict | str) -> str:
    # ASCII JSON: a raw U+2028 or U+001E inside a string would split the event for clients that split lines
    # the way Python's str.splitlines does (the openai client's SSE decoder does).
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"


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
    async def health():
        return {"status": "ok"}

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
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise APIError(400, f"We could not parse the JSON body of your request: {e}") from e
        chat = parse_request(body, settings.model_name)
        try:  # a chat template may refuse a conversation (e.g. no system role); an empty question has no statutes
            context = rag.prepare(chat.question, settings.rag_top_k, retriever=settings.rag_retriever) if rag else None
            instruction, material = (context.instruction, context.input) if context else (chat.question, None)
            prompt = engine.prompt(instruction, material, chat.history, chat.system)
        except (TemplateError, ValueError) as e:
            raise APIError(400, str(e), param="messages") from e
        n_prompt, limit = engine.count_tokens(prompt), engine.context_length
        max_tokens = chat.max_tokens or max(1, min(settings.default_max_tokens, (limit or 10**9) - n_prompt))
        if limit is not None and n_prompt + max_tokens > limit:
            raise APIError(400, f"This model's maximum context length is {limit} tokens. However, you requested "
                                f"{n_prompt + max_tokens} tokens ({n_prompt} in the messages, {max_tokens} in the "
                                "completion). Please reduce the length of the messages or completion.",
                           param="messages", code="context_length_exceeded")
        defaults = settings.defaults
        if "temperature" in chat.options and chat.options["temperature"] > 0:  # OpenAI's sampling defaults
            defaults = defaults.replace(top_p=1.0, top_k=0)
        params = defaults.replace(**chat.options, max_new_tokens=max_tokens,
                                  stop=tuple(engine.prompter.stop) + chat.stop)
        loop, events = asyncio.get_running_loop(), asyncio.Queue()

        def listener(kind, value):  # called on the batcher thread
            try:
                loop.call_soon_threadsafe(events.put_nowait, (kind, value))
            except RuntimeError:  # the event loop is gone (server shutting down): nobody is waiting
                pass

        try:
            handle = engine.submit(prompt, params, listener)
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
                    kind, value = await asyncio.wait_for(events.get(), timeout=0.5)
                except asyncio.TimeoutError:
                    if await request.is_disconnected():
                        return JSONResponse({}, status_code=499)  # nobody to answer; finally frees the slot
                    continue
                if kind == "error":
                    raise APIError(500, f"generation failed: {type(value).__name__}: {value}", type="server_error")
                if kind == "done":
                    break
        finally:
            handle.cancel()
        gen = value
        message = {"role": "assistant", "content": gen.text, "refusal": None}
        choice = {"index": 0, "message": message, "finish_reason": FINISH[gen.finish_reason], "logprobs": None}
        return {**base, "object": "chat.completion", "choices": [choice], "usage": _usage(gen), **extras(gen)}

    return app


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
                yield _sse({"error": {"message": f"generation failed: {type(value).__name__}: {value}",
                                      "type": "server_error", "param": None, "code": None}})
                break
            else:
                gen = value
                yield delta({}, FINISH[gen.finish_reason])
                if more := extras(gen):
                    yield chunk([], **more)
                if include_usage:
                    yield chunk([], usage=_usage(gen))
                break
        yield _sse("[DONE]")
    finally:
        handle.cancel()  # a client that went away mid-stream frees its place in the batch at the next token
