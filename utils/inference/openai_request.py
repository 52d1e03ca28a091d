"""OpenAI chat-completions requests, read and checked without a server: the body (size, JSON), the fields, the
messages. Every refusal is an :class:`APIError` that names the field (``param``), as OpenAI's API does; the app in
utils/inference/api_app.py answers it as OpenAI's error object.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from fastapi import Request

from utils.common.errors import LawgptError

ROLES = ("system", "developer", "user", "assistant")
ECHOED_FIELDS = {"refusal", "annotations", "audio", "function_call", "tool_calls"}  # accepted when null or empty
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


def _is_default(value, default) -> bool:
    """``value`` means the same as ``default``: 0.0 for 0, but never [] for 0 or False for 0 (bool is an int)."""
    number = (int, float)
    if isinstance(default, number) and not isinstance(default, bool):
        return isinstance(value, number) and not isinstance(value, bool) and value == default
    return type(value) is type(default) and value == default


def bad_value(param: str, message: str) -> APIError:
    return APIError(400, message, param=param, code="invalid_value")


def _number(body: dict, name: str, low: float, high: float, integer: bool = False, low_open: bool = False):
    value = body.get(name)
    if value is None:
        return None
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise bad_value(name, f"Invalid type for '{name}': expected {'an integer' if integer else 'a number'}, got "
                         f"{type(value).__name__}.")
    if value < low or value > high or (low_open and value == low):
        bounds = f"{'(' if low_open else '['}{low}, {high}]"
        raise bad_value(name, f"Invalid value for '{name}': {value} is not in {bounds}.")
    return value


def _text(content, param: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) for p in content):
        if any(p.get("type") != "text" or not isinstance(p.get("text"), str) for p in content):
            raise bad_value(param, f"'{param}': only text content parts ({{'type': 'text', 'text': ...}}) are supported.")
        return "\n".join(p["text"] for p in content)
    raise bad_value(param, f"Invalid type for '{param}': expected a string or an array of text parts.")


def parse_messages(messages) -> tuple[str | None, list[tuple[str, str]], str]:
    """(system, [(question, answer)…], last question) from OpenAI messages; 400 naming the field otherwise."""
    if not isinstance(messages, list) or not messages:
        raise bad_value("messages", "'messages' must be a non-empty array of messages.")
    system, turns = None, []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise bad_value(where, f"Invalid type for '{where}': expected an object.")
        role = message.get("role")
        if role not in ROLES:
            raise bad_value(f"{where}.role", f"Invalid value for '{where}.role': {role!r}. Supported values are: "
                                         f"{', '.join(repr(r) for r in ROLES)}.")
        # a reply's message appended as is (openai's resp.choices[0].message) carries these, null or empty
        extra = {k for k in set(message) - {"role", "content", "name"} if not (k in ECHOED_FIELDS and not message[k])}
        if extra:
            raise bad_value(f"{where}.{sorted(extra)[0]}", f"'{where}.{sorted(extra)[0]}' is not supported by this server.")
        if message.get("content") is None:
            raise bad_value(f"{where}.content", f"Missing '{where}.content'.")
        text = _text(message["content"], f"{where}.content")
        if role in ("system", "developer"):
            if i != 0:
                raise bad_value(f"{where}.role", f"'{where}': a {role} message is only allowed as the first message.")
            system = text
            continue
        expected = "user" if len(turns) % 2 == 0 else "assistant"
        if role != expected:
            raise bad_value(f"{where}.role", f"'{where}.role' must be {expected!r} here: after an optional system message, "
                                         "user and assistant messages alternate, starting and ending with user.")
        turns.append(text)
    if len(turns) % 2 == 0:
        raise bad_value("messages", "The last message must be a user message.")
    return system, list(zip(turns[0:-1:2], turns[1::2])), turns[-1]


def parse_request(body, model_name: str) -> ChatRequest:
    if not isinstance(body, dict):
        raise APIError(400, "The request body must be a JSON object.")
    for name in body:
        if name in KNOWN_FIELDS or name in IGNORED_FIELDS:
            continue
        if name not in DEFAULT_ONLY:
            raise bad_value(name, f"Unrecognized request argument supplied: {name}")
        if body[name] is not None and not _is_default(body[name], DEFAULT_ONLY[name]):
            raise bad_value(name, f"'{name}' is not supported by this server (only {DEFAULT_ONLY[name]!r}).")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise bad_value("model", "You must provide a model parameter (a string).")
    if body["model"] != model_name:
        raise APIError(404, f"The model `{body['model']}` does not exist; this server serves `{model_name}`.",
                       param="model", code="model_not_found")
    system, history, question = parse_messages(body.get("messages"))
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise bad_value("stream", "Invalid type for 'stream': expected a boolean.")
    options = body.get("stream_options")
    if options is not None and (not stream or not isinstance(options, dict) or set(options) - {"include_usage"}):
        raise bad_value("stream_options", "'stream_options' is only allowed with stream=true and knows only include_usage.")
    if _number(body, "n", 1, 1, integer=True) not in (None, 1):
        raise bad_value("n", "Only n=1 is supported.")
    limits = {"temperature": (0, 2, False, False), "top_p": (0, 1, False, True), "top_k": (0, 10**6, True, False),
              "repetition_penalty": (0, 10, False, True), "seed": (-(2**63), 2**63 - 1, True, False)}
    sampling = {name: value for name, (low, high, integer, low_open) in limits.items()
                if (value := _number(body, name, low, high, integer, low_open)) is not None}
    given = [_number(body, name, 1, 10**7, integer=True) for name in ("max_completion_tokens", "max_tokens")]
    max_tokens = given[0] if given[0] is not None else given[1]  # both are checked; the newer name wins
    stop = body.get("stop")
    stop = [stop] if isinstance(stop, str) else stop
    if stop is not None and (not isinstance(stop, list) or len(stop) > 4 or
                             not all(isinstance(s, str) and s for s in stop)):
        raise bad_value("stop", "'stop' must be a non-empty string or an array of up to 4 non-empty strings.")
    return ChatRequest(system, history, question, stream, bool((options or {}).get("include_usage")), max_tokens,
                       sampling, tuple(stop or ()))


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it exceeds ``limit`` bytes (announced or streamed)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise APIError(413, f"The request body is {int(declared):,} bytes; this server accepts at most {limit:,}.")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise APIError(413, f"The request body exceeds {limit:,} bytes, the most this server accepts.")
        chunks.append(chunk)
    return b"".join(chunks)


def _no_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def parse_json(raw: bytes):
    """The JSON body; 400 for what Python's json would take but JSON does not (NaN, Infinity), for text that
    cannot be encoded back (a lone surrogate) and for nesting too deep to walk."""
    try:
        body = json.loads(raw, parse_constant=_no_constant)
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except RecursionError as e:
        raise APIError(400, "We could not parse the JSON body of your request: nested too deeply.") from e
    except UnicodeEncodeError as e:
        raise APIError(400, "We could not parse the JSON body of your request: it holds a lone surrogate "
                            f"(\\u{ord(e.object[e.start]):04x}), which is not text.") from e
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise APIError(400, f"We could not parse the JSON body of your request: {e}") from e
    return body


