"""The OpenAI-compatible API (api.py, utils/inference/api_app.py) driven with the official openai client on the tiny model.

Servers run in-process (uvicorn in a thread) on free loopback ports. Every answer is compared with what the
engine gives for the same prompt one request at a time: the API must add nothing and batching must change nothing.
Every test that takes the ``engine`` fixture runs on each ``--engine`` that runs here (issue 32's API bar): hf,
openai over ``transformers serve`` (on the tiny model that never writes a raw-byte token: conftest.tiny_plain_model_dir),
and llama.cpp on the tiny model's f32 GGUF (skipped, saying why, without llama-cpp-python).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from api_harness import (
    BASE,
    KEY,
    MODEL,
    QUESTIONS,
    ROOT,
    Server,
    expected,
    free_port,
    module_server,
    open_engine_of_kind,
    raw,
    user,
)

from utils.inference.api_app import APISettings
from utils.inference.engine import Engine
from utils.inference.openai_request import parse_messages


@pytest.fixture(scope="module", params=["hf", "openai", "llama.cpp"])
def engine(request, tiny_model_dir):
    kind = request.param
    upstream = request.getfixturevalue("transformers_serve_url") if kind == "openai" else None
    gguf = request.getfixturevalue("tiny_gguf") if kind == "llama.cpp" else None
    model_dir = request.getfixturevalue("tiny_plain_model_dir") if kind == "openai" else tiny_model_dir
    engine = open_engine_of_kind(kind, model_dir, upstream, gguf, max_batch_size=16, batch_wait_ms=20)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def server(engine):
    yield from module_server(engine)


def test_models_lists_the_served_model(server):
    import openai

    client = server.client()
    assert [m.id for m in client.models.list()] == [MODEL]
    assert client.models.retrieve(MODEL).owned_by == "lawgpt"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4")


def test_plain_answer_with_usage_equals_the_engine(server, engine):
    reply = server.client().chat.completions.create(model=MODEL, messages=[user(QUESTIONS[0])], max_tokens=12)
    want, prompt = expected(engine, QUESTIONS[0], max_new_tokens=12)
    assert reply.choices[0].message.content == want.text and reply.choices[0].message.role == "assistant"
    assert reply.object == "chat.completion" and reply.id.startswith("chatcmpl-") and reply.model == MODEL
    assert reply.usage.prompt_tokens == engine.count_tokens(prompt) == want.prompt_tokens
    assert reply.usage.completion_tokens == want.new_tokens and reply.usage.total_tokens == want.prompt_tokens + 12
    assert reply.choices[0].finish_reason == {"length": "length"}.get(want.finish_reason, "stop")


def test_streamed_answer_equals_the_plain_answer(server, engine):
    chunks = list(server.client().chat.completions.create(
        model=MODEL, messages=[user(QUESTIONS[1])], max_tokens=20, stream=True, stream_options={"include_usage": True}))
    want, _ = expected(engine, QUESTIONS[1], max_new_tokens=20)
    content = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert len([c for c in content if c]) > 3 and "".join(content) == want.text  # token by token, same text
    assert chunks[0].choices[0].delta.role == "assistant" and all(c.object == "chat.completion.chunk" for c in chunks)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length" if want.finish_reason == "length" else "stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == want.new_tokens


def test_multi_turn_with_a_system_message(server, engine):
    history = [(QUESTIONS[2], "按照劳动法规定支付。"), (QUESTIONS[3], "不超过合同成立时一年期贷款市场报价利率四倍。")]
    messages = [{"role": "system", "content": "你是一名律师。"}]
    for q, a in history:
        messages += [user(q), {"role": "assistant", "content": [{"type": "text", "text": a}]}]
    messages.append(user("那么逾期利息呢？"))
    reply = server.client().chat.completions.create(model=MODEL, messages=messages, max_tokens=10)
    want, prompt = expected(engine, "那么逾期利息呢？", history, "你是一名律师。", max_new_tokens=10)
    assert prompt.startswith("你是一名律师。\n### 问题:") and "### 回答:\n不超过合同成立时" in prompt
    assert reply.choices[0].message.content == want.text and reply.usage.prompt_tokens == want.prompt_tokens


def test_stop_strings_and_sampling_parameters(server, engine):
    client = server.client()
    plain = client.chat.completions.create(model=MODEL, messages=[user(QUESTIONS[4])], max_tokens=16).choices[0]
    text = plain.message.content
    marker = text[5:7]
    assert marker.strip() and text.index(marker) == 5
    cut = client.chat.completions.create(model=MODEL, messages=[user(QUESTIONS[4])], max_tokens=16, stop=[marker])
    assert cut.choices[0].message.content == text[:5].strip() and cut.choices[0].finish_reason == "stop"
    assert cut.usage.completion_tokens < 16
    sample = {"model": MODEL, "messages": [user(QUESTIONS[4])], "max_tokens": 12, "temperature": 1.3, "top_p": 0.95,
              "seed": 11, "extra_body": {"top_k": 50, "repetition_penalty": 1.0}}
    a, b = (client.chat.completions.create(**sample).choices[0].message.content for _ in range(2))
    want, _ = expected(engine, QUESTIONS[4], max_new_tokens=12, temperature=1.3, top_p=0.95, top_k=50, seed=11,
                       repetition_penalty=1.0)
    assert a == b == want.text  # a seeded sample is reproducible and is the engine's


ERRORS = [  # (request body, status, param)
    ('{"model": "tiny-lawgpt", "messages": [', 400, None),
    ([1, 2], 400, None),
    ({**BASE, "messages": []}, 400, "messages"),
    ({**BASE, "messages": [{"role": "robot", "content": "x"}]}, 400, "messages[0].role"),
    ({**BASE, "messages": [user("a"), user("b")]}, 400, "messages[1].role"),
    ({**BASE, "messages": [user("a"), {"role": "assistant", "content": "b"}]}, 400, "messages"),
    ({**BASE, "messages": [user("a"), {"role": "system", "content": "b"}, user("c")]}, 400, "messages[1].role"),
    ({**BASE, "messages": [{"role": "user"}]}, 400, "messages[0].content"),
    ({**BASE, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}, 400,
     "messages[0].content"),
    ({**BASE, "temperature": 3}, 400, "temperature"),
    ({**BASE, "temperature": "hot"}, 400, "temperature"),
    ({**BASE, "top_p": 0}, 400, "top_p"),
    ({**BASE, "max_tokens": 0}, 400, "max_tokens"),
    ({**BASE, "n": 2}, 400, "n"),
    ({**BASE, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    ({**BASE, "stream": "yes"}, 400, "stream"),
    ({**BASE, "stream_options": {"include_usage": True}}, 400, "stream_options"),
    ({**BASE, "tools": [{"type": "function", "function": {"name": "f"}}]}, 400, "tools"),
    ({**BASE, "presence_penalty": 1.0}, 400, "presence_penalty"),
    ({**BASE, "frobnicate": 1}, 400, "frobnicate"),
    ({"messages": [user("问题")]}, 400, "model"),
    ({**BASE, "model": "gpt-4o"}, 404, "model"),
    ({**BASE, "frequency_penalty": []}, 400, "frequency_penalty"),  # [] is not 0
    ({**BASE, "logprobs": 0}, 400, "logprobs"),  # 0 is not False
    ({**BASE, "max_completion_tokens": 3, "max_tokens": "x"}, 400, "max_tokens"),  # both names are checked
    ({**BASE, "repetition_penalty": 1e-45}, 400, "repetition_penalty"),  # the engine's rule: would make NaN
    ('{"model": "tiny-lawgpt", "messages": [{"role": "user", "content": "a"}], "temperature": NaN}', 400, None),
    ('{"model": "tiny-lawgpt", "messages": [{"role": "user", "content": "\\ud800"}]}', 400, None),  # lone surrogate
    ("[" * 100_000 + "]" * 100_000, 400, None),  # nesting too deep to walk
]


@pytest.mark.parametrize("body, status, param", ERRORS)
def test_bad_requests_get_openai_errors(server, body, status, param):
    code, reply = raw(server, body)
    assert code == status, reply
    error = reply["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["param"] == param and error["type"] == "invalid_request_error"


def test_accepted_defaults_and_ignored_fields(server):
    body = {**BASE, "n": 1, "presence_penalty": 0, "frequency_penalty": 0, "logprobs": False, "user": "u1",
            "response_format": {"type": "text"}, "tools": [], "max_completion_tokens": 3, "seed": 1}
    code, reply = raw(server, body)
    assert code == 200 and reply["usage"]["completion_tokens"] <= 3


def test_keys_models_and_paths(server):
    import openai

    for key, message in ((None, "didn't provide"), ("wrong", "Incorrect API key")):
        code, reply = raw(server, BASE, key=key)
        assert code == 401 and message in reply["error"]["message"] and reply["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        server.client(key="wrong").chat.completions.create(model=MODEL, messages=[user("x")], max_tokens=2)
    assert raw(server, {}, path="/models", method="GET")[0] == 200
    assert raw(server, {}, key="wrong", path="/models", method="GET")[0] == 401
    code, reply = raw(server, {}, path="/nowhere", method="GET")
    assert code == 404 and "error" in reply


def test_prompt_over_the_context_names_the_token_counts(server, engine):
    import openai

    long = "盗窃" * 700
    n = engine.count_tokens(engine.prompt(long))
    with pytest.raises(openai.BadRequestError) as info:
        server.client().chat.completions.create(model=MODEL, messages=[user(long)], max_tokens=200)
    error = info.value.body
    assert error["code"] == "context_length_exceeded" and error["param"] == "messages"
    assert f"maximum context length is {engine.context_length} tokens" in error["message"]
    assert f"({n} in the messages, 200 in the completion)" in error["message"]


def test_cors_only_for_listed_origins(server):
    import httpx

    for origin, allowed in (("http://allowed.example", True), ("http://evil.example", False)):
        r = httpx.options(server.url + "/chat/completions", headers={
            "Origin": origin, "Access-Control-Request-Method": "POST"}, timeout=10)
        assert (r.headers.get("access-control-allow-origin") == origin) == allowed
    with pytest.raises(ValueError, match="any web page"):
        APISettings(MODEL, cors_origins=("*",))


def test_twenty_concurrent_clients_are_batched_and_answered_exactly(server, engine):
    before = getattr(engine.batcher, "batches", 0)

    def ask(question):
        reply = server.client().chat.completions.create(model=MODEL, messages=[user(question)], max_tokens=10)
        return reply.choices[0].message.content

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(ask, QUESTIONS))
    batches = getattr(engine.batcher, "batches", 0) - before
    one_by_one = [expected(engine, q, max_new_tokens=10)[0].text for q in QUESTIONS]
    assert answers == one_by_one and all(answers)  # greedy answers do not depend on the batch they ran in
    if engine.model is not None:  # our batcher (the others: the upstream batches, or llama.cpp takes one at a time)
        assert batches < 10, f"20 concurrent requests ran in {batches} batches: they were not batched"


def test_disconnect_mid_stream_frees_the_slot(server, engine):
    import httpx

    body = {**BASE, "messages": [user(QUESTIONS[5])], "max_tokens": 900, "stream": True,
            "repetition_penalty": 1.0, "stop": ["这个标记不会出现"]}
    with httpx.stream("POST", server.url + "/chat/completions", json=body, timeout=30,
                      headers={"Authorization": f"Bearer {KEY}"}) as response:
        lines = response.iter_lines()
        received = [next(lines) for _ in range(6)]
        assert engine.busy, "the generation should still be running"
    gone = time.monotonic()  # leaving the block closed the connection mid-stream
    while engine.busy and time.monotonic() - gone < 5:
        time.sleep(0.01)
    assert not engine.busy and time.monotonic() - gone < 1.5  # ~900 tokens would take seconds more
    assert any('"content"' in line for line in received)
    reply = server.client().chat.completions.create(model=MODEL, messages=[user("问题")], max_tokens=2)
    assert reply.choices[0].message.content is not None


def test_full_queue_answers_503(tiny_model_dir):
    import openai

    engine = Engine.from_pretrained(str(tiny_model_dir), max_batch_size=1, max_queue=1)
    server = Server(engine, APISettings(MODEL))
    try:
        client = server.client()
        long = {"model": MODEL, "messages": [user(QUESTIONS[6])], "max_tokens": 600, "stream": True,
                "extra_body": {"repetition_penalty": 1.0}}
        running = client.chat.completions.create(**long)
        next(iter(running))
        waiting = threading.Thread(target=lambda: list(client.chat.completions.create(**long)), daemon=True)
        waiting.start()
        deadline = time.monotonic() + 10
        while engine.batcher.waiting < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(openai.APIStatusError) as info:
            client.chat.completions.create(model=MODEL, messages=[user("x")], max_tokens=2)
        assert info.value.status_code == 503 and info.value.response.headers["retry-after"] == "1"
        assert info.value.body["code"] == "server_overloaded"
        running.close()
    finally:
        server.stop()
        engine.close()


def test_rag_fields_in_the_reply_and_at_the_end_of_the_stream(tiny_model_dir):
    from utils.legal import rag

    engine = Engine.from_pretrained(str(tiny_model_dir), prompt_template=rag.RAG_TEMPLATE)
    server = Server(engine, APISettings(MODEL, rag_top_k=2), rag=rag)
    try:
        question = "入户盗窃怎么判？"
        messages = [user(question)]
        reply = server.client().chat.completions.create(model=MODEL, messages=messages, max_tokens=12)
        context = rag.prepare(question, top_k=2)
        answer = engine.answer(context.instruction, context.input, max_new_tokens=12)
        assert reply.choices[0].message.content == answer  # the articles were in the prompt
        extra = reply.model_extra["lawgpt"]
        assert extra == json.loads(json.dumps({k: rag.finalize(answer, context)[k]
                                               for k in ("articles", "citations", "citation_summary")}))
        assert [a["citation"] for a in extra["articles"]] == [h.article.citation for h in context.hits]
        chunks = list(server.client().chat.completions.create(model=MODEL, messages=messages, max_tokens=12,
                                                               stream=True))
        # every chunk has a choice, so `chunk.choices[0]` never fails (openai/openai-python #1266); the extras ride
        # on the one with the finish reason
        assert all(c.choices for c in chunks)
        assert "".join(c.choices[0].delta.content or "" for c in chunks) == answer
        assert chunks[-1].choices[0].finish_reason is not None and chunks[-1].model_extra["lawgpt"] == extra
        code, reply = raw(server, {**BASE, "messages": [user("   ")]}, key=None)  # nothing to retrieve for
        assert code == 400 and reply["error"]["param"] == "messages" and "empty question" in reply["error"]["message"]
    finally:
        server.stop()
        engine.close()


def test_parse_messages_pairs_turns():
    system, history, question = parse_messages([
        {"role": "developer", "content": "S"}, user("q1"), {"role": "assistant", "content": "a1"}, user("q2")])
    assert (system, history, question) == ("S", [("q1", "a1")], "q2")


@pytest.mark.slow
def test_api_script_serves_until_stopped(tiny_model_dir):
    port = free_port()
    env = {**os.environ, "LAWGPT_API_KEY": "env-key", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "api.py"), "--base_model", str(tiny_model_dir), "--port",
                             str(port), "--served_model_name", MODEL], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        from openai import OpenAI

        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="env-key", max_retries=0, timeout=30)
        deadline = time.monotonic() + 120
        while True:
            try:
                models = client.models.list()
                break
            except Exception:  # not listening yet
                assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()[-3000:]
                time.sleep(0.3)
        assert [m.id for m in models] == [MODEL]
        reply = client.chat.completions.create(model=MODEL, messages=[user("问题")], max_tokens=3)
        assert reply.usage.completion_tokens <= 3
    finally:
        proc.terminate()
        proc.wait(30)
    bad = subprocess.run([sys.executable, str(ROOT / "api.py"), "--base_model", str(tiny_model_dir),
                          "--cors_origins", "*"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and bad.stderr.strip().splitlines()[-1].startswith("api: error: --cors_origins '*'")


def test_stream_events_are_one_line_each():
    from utils.inference.api_app import _sse

    event = _sse({"choices": [{"delta": {"content": "甲\u2028乙\x1e丙\x85"}}]})
    assert event.endswith("\n\n") and len(event.splitlines()) == 2  # no character a line splitter would cut at
    assert json.loads(event[len("data: "):])["choices"][0]["delta"]["content"] == "甲\u2028乙\x1e丙\x85"
