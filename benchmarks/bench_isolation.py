"""One user's request never breaks another's: a fault-injection table and a poisoned-batch soak against api.py.

    python benchmarks/bench_isolation.py                                   # a tiny random model, built on the fly
    python benchmarks/bench_isolation.py --model_dir models/lawgpt-demo --requests 200 --clients 16

Starts ``api.py`` (a process of its own, 127.0.0.1, an API key) and runs:

1. **Faults** — each case of issue 28 that a client can cause, as case → expected → observed: integer and
   too-small numbers, NaN and broken JSON, oversized bodies (and /health's latency meanwhile), a reply sent back
   as is, fields that must be refused, cross-site requests, a plain request whose client leaves.
2. **Soak** — ``--requests`` requests from ``--clients`` threads, mixed: greedy (the answer must equal the one
   asked alone before the soak), seeded samples (must equal their own alone-answer too), invalid ones (must be a
   4xx with an OpenAI error object) and clients that leave mid-answer (plain and streamed). Reported: errors on
   valid requests, wrong answers, invalid requests not answered 4xx, generations still running one second after
   the last request (``/health``'s ``running`` and ``waiting``: a leaked generation), and the server's RSS
   before and after.

Writes ``--output`` (JSON) and prints the table in Markdown. A tiny random model's answers are noise, but the
isolation questions are about errors and equality, not wording; ``--model_dir`` runs the same on a real model.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import fire
import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
KEY, MODEL = "bench-key", "bench-model"
QUESTIONS = ["酒驾撞人怎么判刑？", "请介绍赌博罪的定义。", "加班工资怎么算？", "民间借贷的合法利息是多少？",
             "离婚时财产怎么分？", "公司拖欠工资怎么办？", "被狗咬了谁赔偿？", "房东不退押金怎么办？"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Api:
    """api.py in a process of its own; ``post``/``get`` with the key; ``rss()`` of the server process (bytes)."""

    def __init__(self, model_dir: str, log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(log, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "api.py", "--base_model", model_dir, "--served_model_name", MODEL, "--api_key", KEY,
             "--port", str(self.port), "--no_rag", "--log_level", "warning", "--max_batch_size", "16"],
            cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.3)
        raise RuntimeError(f"api.py did not start: see {log}")

    def post(self, body, timeout: float = 120, headers: dict | None = None) -> httpx.Response:
        content = body if isinstance(body, (str, bytes)) else json.dumps(body)
        return httpx.post(self.url + "/v1/chat/completions", content=content, timeout=timeout,
                          headers={"Authorization": f"Bearer {KEY}", **(headers or {})})

    def health(self) -> dict:
        return httpx.get(self.url + "/health", timeout=10).json()

    def rss(self) -> int:
        import psutil

        return psutil.Process(self.proc.pid).memory_info().rss

    def idle_within(self, seconds: float) -> float | None:
        """Seconds until nothing runs or waits, or None when still busy after ``seconds``."""
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            h = self.health()
            if h["running"] == 0 and h["waiting"] == 0:
                return time.monotonic() - start
            time.sleep(0.02)
        return None

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()


def body(question: str, **more) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": question}], "max_tokens": 24, **more}


def answer(response: httpx.Response) -> str:
    return response.json()["choices"][0]["message"]["content"]


def leave_early(api: Api, question: str, stream: bool) -> None:
    """A client that gives up after 0.3 s (as one with a short timeout does), mid-answer."""
    request = body(question, max_tokens=600, repetition_penalty=1.0, stop=["这个标记不会出现"], stream=stream)
    try:
        api.post(request, timeout=httpx.Timeout(30, read=0.3))
    except httpx.ReadTimeout:
        pass


# ---------------------------------------------------------------- the fault table


def faults(api: Api) -> list[dict]:
    rows = []

    def row(case: str, expected: str, observed: str, ok: bool) -> None:
        rows.append({"case": case, "expected": expected, "observed": observed, "ok": bool(ok)})
        print(f"[isolation] {'ok  ' if ok else 'FAIL'} {case}: {observed}", flush=True)

    alone = {q: answer(api.post(body(q))) for q in QUESTIONS[:4]}
    for name, value in (("temperature", 2), ("repetition_penalty", 2), ("temperature", 1e-40)):
        with ThreadPoolExecutor(5) as pool:  # the odd request among four greedy ones, in one batch
            odd = pool.submit(api.post, body(QUESTIONS[4], seed=1, **{name: value}))
            greedy = [pool.submit(api.post, body(q)) for q in QUESTIONS[:4]]
            codes = [odd.result().status_code] + [g.result().status_code for g in greedy]
            same = all(answer(g.result()) == alone[q] for g, q in zip(greedy, QUESTIONS[:4]) if g.result().is_success)
        row(f"`{name}: {value}` beside 4 greedy requests", "200; the 4 greedy answers = alone",
            f"{codes[0]}; others {codes[1:]}, answers {'equal' if same else 'DIFFERENT'}",
            codes == [200] * 5 and same)
    for case, raw, param in (
        ("`repetition_penalty: 1e-45`", body("问", repetition_penalty=1e-45), "repetition_penalty"),
        ("`frequency_penalty: []`", body("问", frequency_penalty=[]), "frequency_penalty"),
        ("bad `max_tokens` beside `max_completion_tokens`", body("问", max_completion_tokens=3, max_tokens="x"),
         "max_tokens"),
        ("`NaN` in the JSON", json.dumps(body("问")).replace("24", "NaN"), None),
        ("a lone surrogate", json.dumps(body("问")).replace("\\u95ee", "\\ud800"), None),
        ("100,000-deep nesting", "[" * 100_000 + "]" * 100_000, None),
    ):
        r = api.post(raw)
        error = r.json().get("error", {}) if r.headers.get("content-type", "").startswith("application/json") else {}
        row(case, f"400, error object, param {param}", f"{r.status_code}, param {error.get('param')}",
            r.status_code == 400 and error.get("message") and error.get("param") == param)
    reply = api.post(body(QUESTIONS[0])).json()["choices"][0]["message"]  # refusal: null, as the openai client keeps
    again = api.post({**body(QUESTIONS[1]), "messages": [{"role": "user", "content": QUESTIONS[0]}, reply,
                                                         {"role": "user", "content": QUESTIONS[1]}]})
    row("a reply's message sent back as is (`refusal: null`)", "200", str(again.status_code), again.status_code == 200)
    holder = {}

    def big() -> None:
        holder["r"] = api.post(body("盗" * ((10 << 20) // 3)))  # 3 bytes a character in UTF-8: 10 MiB

    thread = threading.Thread(target=big)
    thread.start()
    started = time.monotonic()
    api.health()
    health_s = time.monotonic() - started
    thread.join()
    row("a 10 MB body", "413; /health answers meanwhile", f"{holder['r'].status_code}; /health in {health_s:.2f} s",
        holder["r"].status_code == 413 and health_s < 1)
    evil = api.post(body("问"), headers={"Origin": "http://evil.example", "Content-Type": "text/plain"})
    rebound = api.post(body("问"), headers={"Host": "attacker.example"})
    row("cross-site POST / foreign Host header", "403 / 400", f"{evil.status_code} / {rebound.status_code}",
        evil.status_code == 403 and rebound.status_code == 400)
    for stream in (False, True):
        leave_early(api, QUESTIONS[5], stream)
        freed = api.idle_within(5)
        kind = "streamed" if stream else "plain"
        row(f"a {kind} request's client leaves after 0.3 s", "generation stopped within 1 s",
            "still running after 5 s" if freed is None else f"stopped {freed:.2f} s later",
            freed is not None and freed < 1)
    return rows


# ---------------------------------------------------------------- the soak


def soak(api: Api, requests: int, clients: int, seed: int) -> dict:
    rng = random.Random(seed)
    greedy = {q: answer(api.post(body(q))) for q in QUESTIONS}
    sampled = {q: answer(api.post(body(q, temperature=1.0, seed=7))) for q in QUESTIONS}
    invalid = [body("问", temperature=-1), body("问", top_p=0), body("问", n=2), body("问", tools=[{"x": 1}]),
               body("问", repetition_penalty=1e-45), "{broken", body("问", messages=[])]
    plan = [rng.choice(["greedy"] * 5 + ["sampled"] * 2 + ["invalid"] * 2 + ["leave", "leave_stream"])
            for _ in range(requests)]
    rss_before = api.rss()
    counts = {"valid": 0, "valid_errors": 0, "wrong_answers": 0, "invalid": 0, "invalid_not_4xx": 0, "left": 0}
    lock = threading.Lock()

    def one(i: int) -> None:
        kind = plan[i]
        q = QUESTIONS[i % len(QUESTIONS)]
        if kind in ("leave", "leave_stream"):
            leave_early(api, q, kind == "leave_stream")
            with lock:
                counts["left"] += 1
            return
        if kind == "invalid":
            r = api.post(invalid[i % len(invalid)])
            with lock:
                counts["invalid"] += 1
                counts["invalid_not_4xx"] += not (400 <= r.status_code < 500 and "error" in r.json())
            return
        r = api.post(body(q) if kind == "greedy" else body(q, temperature=1.0, seed=7))
        want = greedy[q] if kind == "greedy" else sampled[q]
        with lock:
            counts["valid"] += 1
            if r.status_code != 200:
                counts["valid_errors"] += 1
            elif answer(r) != want:
                counts["wrong_answers"] += 1

    started = time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, range(requests)))
    wall = time.monotonic() - started
    time.sleep(1.0)
    health = api.health()
    return {**counts, "requests": requests, "clients": clients, "seconds": round(wall, 1),
            "leaked_generations": health["running"] + health["waiting"],
            "rss_before_mb": round(rss_before / 2**20), "rss_after_mb": round(api.rss() / 2**20)}


def main(model_dir: str | None = None, requests: int = 200, clients: int = 16, seed: int = 0,
         output: str = "outputs/bench/isolation.json") -> dict:
    """Run the fault table and the soak; returns (and writes to ``output``) both. Exit status 1 when a check fails."""
    with tempfile.TemporaryDirectory() as tmp:
        if model_dir is None:
            sys.path.insert(0, str(ROOT / "tests"))
            from tiny_model import build_tiny_model

            model_dir = str(build_tiny_model(Path(tmp) / "tiny"))
        api = Api(model_dir, Path(tmp) / "api.log")
        try:
            rows = faults(api)
            result = {"model": model_dir, "faults": rows, "soak": soak(api, requests, clients, seed)}
        finally:
            api.stop()
    s = result["soak"]
    print("\n| case | expected | observed |\n|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['expected']} | {r['observed']}{'' if r['ok'] else ' **(fails)**'} |")
    print(f"\nsoak: {s['requests']} requests from {s['clients']} clients in {s['seconds']} s: {s['valid']} valid "
          f"({s['valid_errors']} errors, {s['wrong_answers']} wrong answers), {s['invalid']} invalid "
          f"({s['invalid_not_4xx']} not 4xx), {s['left']} left early; leaked generations {s['leaked_generations']}; "
          f"RSS {s['rss_before_mb']} → {s['rss_after_mb']} MB")
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    Path(output).write_text(json.dumps(result, ensure_ascii=False, indent=2))
    passed = all(r["ok"] for r in rows) and not (s["valid_errors"] or s["wrong_answers"] or s["invalid_not_4xx"]
                                                 or s["leaked_generations"])
    if not passed:
        raise SystemExit(1)
    return result


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    fire.Fire(main, serialize=lambda result: None)
