"""What the API tests share: the tiny model's engine, uvicorn serving build_api(...) in a thread on a free loopback port,
raw HTTP requests, and the answer the engine gives alone (tests/test_api.py, tests/test_api_isolation.py)."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

from utils.inference.api_app import APISettings, build_api
from utils.inference.engine import Engine, GenerationParams

ROOT = Path(__file__).resolve().parent.parent
KEY = "test-key-123"
MODEL = "tiny-lawgpt"
QUESTIONS = ["酒驾撞人怎么判刑？", "请介绍赌博罪的定义。", "加班工资怎么算？", "民间借贷的合法利息是多少？", "离婚时财产怎么分？",
             "交通事故责任怎么认定？", "劳动合同到期不续签有补偿吗？", "网购到假货怎么办？", "房东不退押金怎么办？",
             "被狗咬了谁赔偿？", "盗窃罪的立案标准是什么？", "正当防卫的界限在哪里？", "遗嘱怎么写才有效？",
             "未成年人犯罪怎么处理？", "工伤认定需要什么材料？", "借条和欠条有什么区别？", "诈骗罪怎么量刑？",
             "公司拖欠工资怎么办？", "醉驾的标准是什么？", "邻居噪音扰民怎么办？"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """uvicorn serving build_api(...) in a thread, stopped by stop()."""

    def __init__(self, engine: Engine, settings: APISettings, rag=None):
        import uvicorn

        self.engine, self.port = engine, free_port()
        config = uvicorn.Config(build_api(engine, settings, rag), host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self.server.started
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def client(self, key: str | None = KEY, **kwargs):
        from openai import OpenAI

        return OpenAI(base_url=self.url, api_key=key or "none", max_retries=0, timeout=60, **kwargs)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def module_engine(tiny_model_dir):
    """The engine a test module's ``engine`` fixture yields (module scope: one model per module)."""
    engine = Engine.from_pretrained(str(tiny_model_dir), max_batch_size=16, batch_wait_ms=20)
    yield engine
    engine.close()


def module_server(engine):
    """The server a test module's ``server`` fixture yields: a key and one allowed browser origin."""
    server = Server(engine, APISettings(MODEL, api_key=KEY, cors_origins=("http://allowed.example",)))
    yield server
    server.stop()


def expected(engine, question, history=(), system=None, **params):
    prompt = engine.prompt(question, None, list(history), system)
    return engine.generate([prompt], GenerationParams(**params))[0], prompt


def user(text):
    return {"role": "user", "content": text}



def raw(server, body, key=KEY, path="/chat/completions", method="POST"):
    import httpx

    headers = {"Authorization": f"Bearer {key}"} if key else {}
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    response = httpx.request(method, server.url + path, content=data, headers=headers, timeout=30)
    return response.status_code, response.json()


BASE = {"model": MODEL, "messages": [user("问题")], "max_tokens": 2}


class TransformersServe:
    """``transformers serve MODEL_DIR`` (an OpenAI-compatible server) as a subprocess on a free loopback port: the
    upstream of ``--engine openai`` in the tests. ``url`` ends in /v1; stop() ends it."""

    def __init__(self, model_dir: Path, timeout: float = 120.0):
        import os
        import subprocess
        import sys

        import httpx

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        cli = Path(sys.executable).with_name("transformers")
        self.log = open(Path(model_dir).parent / f"serve-{self.port}.log", "w")
        self.process = subprocess.Popen([str(cli), "serve", str(model_dir), "--host", "127.0.0.1", "--port",
                                         str(self.port)], stdout=self.log, stderr=subprocess.STDOUT,
                                        env={**os.environ, "HF_HUB_OFFLINE": "1"})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"transformers serve exited with {self.process.returncode}: see {self.log.name}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200:
                    self._warm_up(httpx)
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"transformers serve did not come up in {timeout:g} s: see {self.log.name}")

    def _warm_up(self, httpx) -> None:
        # transformers serve 5.23 loads the model on the first completion and resets that connection (seen 3 of 3
        # times here): one throwaway request first, so the tests' requests meet a loaded model
        for _ in range(3):
            try:
                httpx.post(f"{self.url}/completions", json={"prompt": "你好", "max_tokens": 1}, timeout=120)
                return
            except httpx.HTTPError:
                time.sleep(0.5)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except Exception:
            self.process.kill()
        self.log.close()


def open_engine_of_kind(kind: str, model_dir: Path, upstream_url: str | None = None, gguf: Path | None = None,
                        **options) -> Engine:
    """An engine of one ``--engine`` kind on the same model: hf, openai (over ``upstream_url``), llama.cpp (``gguf``)."""
    from utils.inference.engines import EngineChoice

    choice = {"hf": EngineChoice(), "openai": EngineChoice("openai", engine_url=upstream_url),
              "llama.cpp": EngineChoice("llama.cpp", gguf=str(gguf) if gguf else None, engine_threads=2)}[kind]
    return Engine.from_pretrained(str(model_dir), choice=choice, **options)
