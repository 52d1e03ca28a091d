"""``--engine``: the same answers from every engine that runs here, and clear errors from upstreams that fail.

Greedy answers of ``hf``, ``openai`` over ``transformers serve`` and ``llama.cpp`` on an f32 GGUF are compared on the
same tiny model (conftest.tiny_plain_model_dir: it never writes a raw-byte token, on which transformers serve's stream
decoder fails). Upstream failures are played by a stub HTTP server: down, silent, refusing, dying mid-answer.
The API bar on each engine is tests/test_api.py (its ``engine`` fixture).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from api_harness import KEY, MODEL, QUESTIONS, ROOT, Server, free_port, open_engine_of_kind, user

from utils.common.errors import ConfigError
from utils.inference.api_app import APISettings
from utils.inference.engine import Engine, GenerationParams
from utils.inference.engines import EngineChoice
from utils.inference.upstream import UpstreamError

GREEDY = GenerationParams(max_new_tokens=24, repetition_penalty=1.0)


@pytest.fixture(scope="module")
def hf(tiny_plain_model_dir):
    engine = open_engine_of_kind("hf", tiny_plain_model_dir)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def upstream(tiny_plain_model_dir, transformers_serve_url):
    engine = open_engine_of_kind("openai", tiny_plain_model_dir, transformers_serve_url)
    yield engine
    engine.close()


def answers(engine, params=GREEDY, questions=QUESTIONS[:8]):
    return [engine.generate([engine.prompt(q)], params)[0] for q in questions]


def test_openai_over_transformers_serve_answers_as_hf(hf, upstream):
    want, got = answers(hf), answers(upstream)
    assert [g.text for g in got] == [w.text for w in want] and all(w.text for w in want)
    assert [g.finish_reason for g in got] == [w.finish_reason for w in want]
    assert [g.new_tokens for g in got] == [w.new_tokens for w in want]  # the server's usage
    streamed = list(upstream.stream_prompt(upstream.prompt(QUESTIONS[0]), GREEDY))
    assert len(streamed) > 3 and streamed[-1] == want[0].text  # token by token, growing to the same answer


def test_stop_strings_and_cancellation_over_openai(hf, upstream):
    text = answers(hf, questions=QUESTIONS[:1])[0].text
    marker = text[4:6]
    cut = upstream.generate([upstream.prompt(QUESTIONS[0])], GREEDY.replace(stop=(marker,)))[0]
    assert cut.text == text[: text.index(marker)].strip() and cut.finish_reason == "stop"
    event = threading.Event()
    long = GREEDY.replace(max_new_tokens=800, stop=("这个标记不会出现",))
    stream = upstream.stream_prompt(upstream.prompt(QUESTIONS[1]), long, stop_event=event)
    next(stream)
    event.set()
    rest = list(stream)
    stopped = time.monotonic()
    while upstream.busy and time.monotonic() - stopped < 5:
        time.sleep(0.01)
    assert len(rest) < 50 and not upstream.busy and time.monotonic() - stopped < 1.5  # not after 800 tokens


def test_transformers_server_kind_carries_the_repetition_controls(hf, tiny_plain_model_dir, transformers_serve_url):
    """transformers serve takes a GenerationConfig as JSON: its repetition controls count the prompt too, as ours
    do with penalize_prompt=True."""
    engine = Engine.from_pretrained(str(tiny_plain_model_dir), choice=EngineChoice(
        "openai", engine_url=transformers_serve_url, engine_server="transformers"))
    try:
        params = GenerationParams(max_new_tokens=24, repetition_penalty=1.3, no_repeat_ngram_size=3,
                                  penalize_prompt=True)
        assert [a.text for a in answers(engine, params)] == [a.text for a in answers(hf, params)]
        assert answers(engine, params)[0].text != answers(engine)[0].text  # the settings arrived
    finally:
        engine.close()


def test_llama_cpp_on_an_f32_gguf_answers_as_hf(hf, tiny_plain_model_dir, tmp_path_factory):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed: bash scripts/install_llama_cpp.sh")
    from tools import export_gguf

    gguf = tmp_path_factory.mktemp("plain-gguf") / "plain-f32.gguf"
    export_gguf.main(["--model_dir", str(tiny_plain_model_dir), "--output", str(gguf), "--outtype", "f32"])
    engine = open_engine_of_kind("llama.cpp", tiny_plain_model_dir, gguf=gguf)
    try:
        assert [a.text for a in answers(engine)] == [a.text for a in answers(hf)]
        params = GenerationParams(max_new_tokens=24, repetition_penalty=1.3, no_repeat_ngram_size=3)  # ours, as hf's
        assert [a.text for a in answers(engine, params)] == [a.text for a in answers(hf, params)]
        sampled = GenerationParams(max_new_tokens=16, temperature=0.9, seed=7)
        assert answers(engine, sampled)[0].text == answers(engine, sampled)[0].text  # a seed reproduces
        assert engine.context_length == 1024 and "llama.cpp" in engine.device
    finally:
        engine.close()


# ------------------------------------------------------------------ upstreams that fail


class Stub:
    """An HTTP server on a free port whose /v1/completions does ``behaviour``: "slow", "refuse", "die" or "busy";
    "locked": its /v1/models wants the key "right"."""

    def __init__(self, behaviour: str):
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _json(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if behaviour == "locked" and self.headers.get("Authorization") != "Bearer right":
                    return self._json(401, {"error": {"message": "Incorrect API key provided."}})
                self._json(200, {"object": "list", "data": [{"id": "stub", "object": "model", "owned_by": "stub"}]})

            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                if behaviour == "slow":
                    time.sleep(outer.delay)
                    return self._json(200, {})
                if behaviour in ("refuse", "busy"):
                    status = 400 if behaviour == "refuse" else 429
                    return self._json(status, {"error": {"message": "This model's maximum context length is 8"}})
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                chunk = {"choices": [{"index": 0, "text": "根据", "finish_reason": None}]}
                self.wfile.write(f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n".encode())
                self.wfile.flush()
                self.connection.shutdown(2)  # gone mid-answer, no [DONE]

        self.delay = 5.0
        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()


@pytest.mark.parametrize("behaviour, status, words", [
    ("slow", 504, "sent nothing for 1 s"), ("refuse", 400, "answered 400: This model's maximum context length"),
    ("busy", 503, "answered 429"), ("die", 502, "lost the engine")])
def test_a_failing_upstream_is_a_clear_error_with_its_status(tiny_plain_model_dir, behaviour, status, words):
    import openai

    stub = Stub(behaviour)
    engine = Engine.from_pretrained(str(tiny_plain_model_dir), choice=EngineChoice(
        "openai", engine_url=stub.url, engine_timeout=1))
    server = Server(engine, APISettings(MODEL, api_key=KEY))
    try:
        started = time.monotonic()
        with pytest.raises(UpstreamError, match=words) as info:
            engine.generate([engine.prompt("问题")], GREEDY)
        assert info.value.status == status and time.monotonic() - started < 4  # never a hang
        with pytest.raises(openai.APIStatusError) as info:
            server.client().chat.completions.create(model=MODEL, messages=[user("问题")], max_tokens=4)
        assert info.value.status_code == status and words in info.value.body["message"]
        stream = server.client().chat.completions.create(model=MODEL, messages=[user("问题")], max_tokens=4,
                                                         stream=True)
        with pytest.raises(openai.APIError, match=words):
            list(stream)
    finally:
        server.stop()
        engine.close()
        stub.stop()


def test_an_upstream_that_refuses_our_key_fails_at_start(tiny_plain_model_dir):
    stub = Stub("locked")
    try:
        with pytest.raises(ConfigError, match="refused our key .401.: pass its key with --engine_api_key"):
            Engine.from_pretrained(str(tiny_plain_model_dir), choice=EngineChoice("openai", engine_url=stub.url))
        engine = Engine.from_pretrained(str(tiny_plain_model_dir), choice=EngineChoice(
            "openai", engine_url=stub.url, engine_api_key="right"))
        assert engine.batcher.model == "stub" and engine.batcher.server == "generic"
        engine.close()
    finally:
        stub.stop()


def test_an_upstream_that_is_down_fails_at_start_in_one_line(tiny_plain_model_dir):
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(UpstreamError, match=f"cannot reach the engine at {url}.*start it"):
        Engine.from_pretrained(str(tiny_plain_model_dir), choice=EngineChoice("openai", engine_url=url))
    result = subprocess.run([sys.executable, "infer.py", "--base_model", str(tiny_plain_model_dir), "--engine", "openai",
                             "--engine_url", url], cwd=ROOT, capture_output=True, text=True, input="", timeout=120)
    assert result.returncode == 1 and "cannot reach the engine" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) <= 3


@pytest.mark.parametrize("choice, words", [
    (EngineChoice("openai"), "--engine openai needs --engine_url"),
    (EngineChoice("llama.cpp"), "--engine llama.cpp needs --gguf"),
    (EngineChoice("hf", gguf="x.gguf"), "--gguf belongs to --engine llama.cpp"),
    (EngineChoice("tgi"), "choose one of hf, openai, llama.cpp, vllm"),
    (EngineChoice("llama.cpp", gguf="/nowhere/x.gguf"), "no such file"),
])
def test_flags_that_do_not_fit_are_refused(tiny_plain_model_dir, choice, words):
    with pytest.raises(ConfigError, match=words):
        Engine.from_pretrained(str(tiny_plain_model_dir), choice=choice)


def test_engines_other_than_hf_want_merged_weights(tiny_plain_model_dir):
    with pytest.raises(ConfigError, match="merge the adapter first"):
        Engine.from_pretrained(str(tiny_plain_model_dir), "some/adapter", choice=EngineChoice("openai", engine_url="x"))


def test_vllm_refuses_in_one_line_where_it_cannot_run(tiny_plain_model_dir):
    try:
        import torch
        import vllm  # noqa: F401

        if torch.cuda.is_available():
            pytest.skip("vLLM and a GPU are here: tests/gpu_check covers it")
    except ImportError:
        pass
    with pytest.raises(ConfigError, match="--engine vllm needs .*--engine openai --engine_url"):
        Engine.from_pretrained(str(tiny_plain_model_dir), choice=EngineChoice("vllm"))


def test_vllm_backend_maps_our_settings_and_streams_through_our_stops(tiny_plain_model_dir, monkeypatch):
    """Against a stand-in for vllm's AsyncLLMEngine (no GPU here): our prompt ids go in, its cumulative text comes
    out through our stop markers; beam search and the n-gram ban are refused by name."""
    import types

    import torch

    seen = {}

    class StandIn:
        @classmethod
        def from_engine_args(cls, args):
            seen["args"] = args
            return cls()

        async def generate(self, prompt, sampling, request_id):
            seen["prompt"], seen["sampling"] = prompt, sampling
            text = ""
            for piece in ["根据", "《刑法》", "规定", "\n### 问题:", "下一个"]:
                text += piece
                yield types.SimpleNamespace(outputs=[types.SimpleNamespace(
                    text=text, token_ids=list(range(len(text))), finish_reason=None, stop_reason=None)])

        async def abort(self, request_id):
            seen["aborted"] = request_id

    fake = types.SimpleNamespace(AsyncEngineArgs=lambda **kw: kw, AsyncLLMEngine=StandIn,
                                 SamplingParams=lambda **kw: kw)
    monkeypatch.setitem(sys.modules, "vllm", fake)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    engine = Engine.from_pretrained(str(tiny_plain_model_dir), choice=EngineChoice("vllm", engine_tensor_parallel=2))
    try:
        prompt = engine.prompt("盗窃怎么判？")
        generation = engine.generate([prompt], GenerationParams(max_new_tokens=9, repetition_penalty=1.2, seed=3))[0]
        assert generation.text == "根据《刑法》规定" and generation.finish_reason == "stop" and seen["aborted"]
        assert seen["prompt"] == {"prompt_token_ids": engine.encode(prompt)} and seen["args"]["tensor_parallel_size"] == 2
        sampling = seen["sampling"]
        assert (sampling["max_tokens"], sampling["repetition_penalty"], sampling["seed"]) == (9, 1.2, 3)
        assert sampling["temperature"] == 0.0 and "### 问题:" in sampling["stop"]
        with pytest.raises(Exception, match="no_repeat_ngram_size"):
            engine.generate([prompt], GenerationParams(no_repeat_ngram_size=3))
    finally:
        engine.close()


def test_serve_script_puts_our_api_in_front_of_llama_cpps_server(tiny_plain_model_dir, tmp_path):
    """scripts/serve.sh on a CPU: the model exported to GGUF once, llama.cpp's server on a loopback port, api.py in
    front with --engine openai; the answer is the hf engine's (f32, greedy); `kill` of the script stops both."""
    pytest.importorskip("llama_cpp.server.app", reason="llama-cpp-python[server] is not installed: "
                                                       "bash scripts/install_llama_cpp.sh")
    import os
    import signal

    import httpx

    model = tmp_path / "model"
    shutil.copytree(tiny_plain_model_dir, model)
    engine_port, api_port = free_port(), free_port()
    env = {**os.environ, "MODEL": str(model), "ENGINE": "llama.cpp", "GGUF_TYPE": "f32", "THREADS": "2",
           "ENGINE_PORT": str(engine_port)}
    log = open(tmp_path / "serve.log", "w")
    process = subprocess.Popen(["bash", "scripts/serve.sh", "--", "--port", str(api_port), "--served_model_name", MODEL,
                                "--api_key", KEY, "--repetition_penalty", "1.0"], cwd=ROOT, env=env, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{api_port}/v1"
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                if httpx.get(url.replace("/v1", "/health"), timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        from openai import OpenAI

        client = OpenAI(base_url=url, api_key=KEY, max_retries=0, timeout=120)
        reply = client.chat.completions.create(model=MODEL, messages=[user(QUESTIONS[0])], max_tokens=16)
        hf = open_engine_of_kind("hf", model)
        try:
            want = hf.generate([hf.prompt(QUESTIONS[0])], GenerationParams(max_new_tokens=16, repetition_penalty=1.0))
        finally:
            hf.close()
        assert reply.choices[0].message.content == want[0].text
        assert (model.parent / "model.f32.gguf").is_file()
    finally:
        process.terminate()  # `kill PID` of the script alone: the API and the engine must go with it
        try:
            process.wait(60)
        finally:
            if process.poll() is None:  # only when the test already failed: clean up
                os.killpg(process.pid, signal.SIGKILL)
            log.close()
    time.sleep(1)
    for port in (api_port, engine_port):  # neither the engine nor the API in front of it outlives the script
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2)


def test_the_data_tools_local_back_end_takes_the_engine(tiny_plain_model_dir, transformers_serve_url):
    """tools/self_instruct.py and clean_data.py's --backend local with --engine openai: the same completions."""
    import argparse

    from utils.datagen.llm_backends import add_generator_arguments, generator_from_args

    parser = argparse.ArgumentParser()
    add_generator_arguments(parser, "template")
    base = ["--backend", "local", "--model_path", str(tiny_plain_model_dir)]
    hf = generator_from_args(parser.parse_args(base))
    upstream = generator_from_args(parser.parse_args(base + ["--engine", "openai", "--engine_url",
                                                             transformers_serve_url]))
    try:
        hf.repetition_penalty = upstream.repetition_penalty = 1.0  # transformers serve takes no penalty field
        prompts = QUESTIONS[:3]
        kwargs = {"max_new_tokens": 12}
        assert upstream.engine.model is None and upstream.complete(prompts, **kwargs) == hf.complete(prompts, **kwargs)
    finally:
        hf.engine.close()
        upstream.engine.close()
