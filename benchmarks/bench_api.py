"""Aggregate tokens/s and time to first token (TTFT) of OpenAI-compatible servers, measured with the official client.

    # any running server (ours, vLLM, llama.cpp, transformers serve, OpenAI …)
    python benchmarks/bench_api.py --base_url http://127.0.0.1:8000/v1 --model lawgpt-demo --api_key KEY
    # start ours (api.py) and `transformers serve` on the same model and measure them in alternation
    python benchmarks/bench_api.py --model_dir models/base_models/gemma-3-270m --targets ours,hf --threads 1

For each concurrency level (``--clients 1,4,16``) each of the c clients sends its share of the requests one after
another (a closed loop; ``--min_requests`` in all at least) — streaming, greedy, ``--max_tokens`` each, the same
questions (resources/example_infer_data.json) and ``stop`` for every server. Reported per level: aggregate
tokens/s (completion tokens of all requests ÷ wall time of the level), TTFT p50/p95 (request sent → first
content), and tokens/s relative to 1 client. Completion tokens are the server's ``usage`` (counted with
``--tokenizer`` when a server sends none). With ``--repeats`` > 1 the targets run in alternating order per
repeat, and the median tokens/s is kept (TTFTs are pooled): the machines are shared, so compare within a run.

``--arrivals poisson --rate R --requests N`` (issue 32): instead of closed loops, N requests are sent at random
times — exponential gaps, R per second on average, the same seeded schedule for every server — by a pool of
``--clients`` threads, so a request can arrive while others run, as with real users. Reported: TTFT p50/p95 (from
the scheduled send time), aggregate tokens/s (first send to last answer) and the mean number in flight.

``--model_dir`` starts the servers itself, one at a time, on free loopback ports: ``ours`` = ``api.py`` (repetition penalty off,
so both decode the same way; requests join running batches), ``ours_batch`` = the same with ``--batching batch``
(batch-at-a-time), ``llama_cpp`` = ``api.py --engine llama.cpp --gguf GGUF``, ``hf`` = ``transformers serve``,
``hf_cb`` = ``transformers serve --continuous-batching`` (256 blocks of 32 tokens). A model without a chat template is served to ``transformers serve`` through a linked
copy with our template written in (tools/write_chat_template.py), so both see the same prompt.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import fire

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from utils.common.datafiles import load_instruction_data  # noqa: E402

STOP = "### 问题:"  # our template's next-turn marker, sent to every server so all stop alike (--stop "" sends none)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))] if ordered else float("nan")


class Target:
    """A server to measure: its URL, the model name to send, and the process if we started it."""

    def __init__(self, name: str, base_url: str, model: str, api_key: str = "none", proc=None, log=None):
        self.name, self.base_url, self.model, self.api_key, self.proc, self.log = name, base_url, model, api_key, proc, log

    def client(self):
        from openai import OpenAI

        return OpenAI(base_url=self.base_url, api_key=self.api_key, max_retries=0, timeout=900)

    def wait_ready(self, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.client().chat.completions.create(model=self.model, messages=[{"role": "user", "content": "你好"}],
                                                      max_tokens=2, temperature=0)  # also warms the model up
                return
            except Exception as e:  # not listening (or not loaded) yet
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited: {Path(self.log).read_text()[-2000:]}") from e
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.name} at {self.base_url} did not answer within {timeout} s") from e
                time.sleep(1)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(60)


def start(name: str, model_dir: Path, work: Path, threads: int | None, gguf: str | None = None) -> Target:
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    if name in ("ours", "ours_batch", "llama_cpp"):
        cmd = [sys.executable, str(ROOT / "api.py"), "--base_model", str(model_dir), "--port", str(port),
               "--served_model_name", "bench", "--repetition_penalty", "1.0", "--log_level", "warning",
               "--no_rag"]  # the same prompt as transformers serve gets (a model trained with law_rag turns --rag on)
        if name == "ours_batch":
            cmd += ["--batching", "batch"]
        if name == "llama_cpp":
            if not gguf:
                raise ValueError("the llama_cpp target needs --gguf (tools/export_gguf.py writes one)")
            cmd += ["--engine", "llama.cpp", "--gguf", gguf] + (["--engine_threads", str(threads)] if threads else [])
        model = "bench"
    else:
        served = model_dir
        from transformers import AutoTokenizer

        if not AutoTokenizer.from_pretrained(str(model_dir)).chat_template:
            served = work / "with-template"
            if not served.exists():
                subprocess.run([sys.executable, str(ROOT / "tools" / "write_chat_template.py"), "--model_dir",
                                str(model_dir), "--output_dir", str(served)], check=True)
        cmd = [str(Path(sys.executable).with_name("transformers")), "serve", str(served), "--port", str(port),
               "--device", "cpu", "--log-level", "error"]
        if name == "hf_cb":  # bounded paged cache: left to itself it sizes the cache from RAM and is OOM-killed on CPU
            cmd += ["--continuous-batching", "--cb-num-blocks", "256", "--cb-block-size", "32",
                    "--cb-max-batch-tokens", "512"]
        env["HF_HOME"] = str(work / "hf")
        model = str(served)
    log = work / f"{name}.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    return Target(name, f"http://127.0.0.1:{port}/v1", model, proc=proc, log=log)


def one_request(target: Target, client, question: str, max_tokens: int, tokenizer, stop: str) -> dict:
    sent = time.perf_counter()
    first, text, usage = None, [], None
    stream = client.chat.completions.create(model=target.model, messages=[{"role": "user", "content": question}],
                                            max_tokens=max_tokens, temperature=0, stop=[stop] if stop else None,
                                            stream=True, stream_options={"include_usage": True})
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage.completion_tokens
        for choice in chunk.choices:
            if choice.delta.content:
                first = first or time.perf_counter()
                text.append(choice.delta.content)
    answer = "".join(text)
    if usage is None:
        if tokenizer is None:
            raise RuntimeError(f"{target.name} sent no usage: pass --tokenizer to count the tokens")
        usage = len(tokenizer(answer, add_special_tokens=False)["input_ids"])
    return {"ttft": (first or time.perf_counter()) - sent, "tokens": usage, "seconds": time.perf_counter() - sent}


def run_level(target: Target, clients: int, requests: int, questions: list[str], max_tokens: int, tokenizer,
              stop: str = STOP) -> dict:
    per_client = -(-requests // clients)
    results, errors = [], []
    lock = threading.Lock()
    connections = [target.client() for _ in range(clients)]  # made before the clock starts (~0.1 s each)
    ready = threading.Barrier(clients + 1)

    def client_loop(k: int) -> None:
        client = connections[k]
        ready.wait()
        for j in range(per_client):
            try:
                r = one_request(target, client, questions[(k * per_client + j) % len(questions)], max_tokens, tokenizer,
                                stop)
            except Exception as e:  # counted and reported, never hidden
                with lock:
                    errors.append(f"{type(e).__name__}: {e}")
                continue
            with lock:
                results.append(r)

    threads = [threading.Thread(target=client_loop, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    ready.wait()  # every client starts at once
    start_time = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start_time
    tokens = sum(r["tokens"] for r in results)
    return {"target": target.name, "clients": clients, "requests": len(results), "errors": errors, "wall_s": wall,
            "tokens": tokens, "tokens_per_s": tokens / wall, "ttfts": [r["ttft"] for r in results]}


def run_arrivals(target: Target, clients: int, requests: int, rate: float, questions: list[str], max_tokens: int,
                 tokenizer, stop: str = STOP, seed: int = 0) -> dict:
    """``requests`` sent at Poisson times (``rate`` per second, seeded) by ``clients`` threads; see the docstring."""
    import random

    rng = random.Random(seed)
    times, t = [], 0.0
    for _ in range(requests):
        t += rng.expovariate(rate)
        times.append(t)
    results, errors, lock = [], [], threading.Lock()
    next_index, in_flight, samples = [0], [0], []
    connections = [target.client() for _ in range(clients)]
    start_time = time.perf_counter() + 0.5

    def client_loop(k: int) -> None:
        while True:
            with lock:
                i = next_index[0]
                next_index[0] += 1
            if i >= requests:
                return
            due = start_time + times[i]
            time.sleep(max(0.0, due - time.perf_counter()))
            with lock:
                in_flight[0] += 1
                samples.append(in_flight[0])
            try:
                r = one_request(target, connections[k], questions[i % len(questions)], max_tokens, tokenizer, stop)
                r["ttft"] += time.perf_counter() - r["seconds"] - due  # from the scheduled time: a late send counts
            except Exception as e:  # counted and reported, never hidden
                with lock:
                    errors.append(f"{type(e).__name__}: {e}")
                continue
            finally:
                with lock:
                    in_flight[0] -= 1
            with lock:
                results.append(r)

    threads = [threading.Thread(target=client_loop, args=(k,)) for k in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start_time - times[0]
    tokens = sum(r["tokens"] for r in results)
    return {"target": target.name, "clients": clients, "requests": len(results), "errors": errors, "wall_s": wall,
            "tokens": tokens, "tokens_per_s": tokens / wall, "ttfts": [r["ttft"] for r in results],
            "mean_in_flight": statistics.mean(samples) if samples else 0.0, "rate": rate}


def main(base_url: str | None = None, model: str | None = None, api_key: str | None = None,
         model_dir: str | None = None, targets: str = "ours,hf", clients: str = "1,4,16", min_requests: int = 4,
         max_tokens: int = 32, repeats: int = 1, threads: int | None = None, tokenizer: str | None = None,
         stop: str = STOP, output: str = "outputs/bench_api.json", arrivals: str = "closed", rate: float = 1.0,
         requests: int = 48, gguf: str | None = None, seed: int = 0) -> dict:
    """Measure; see the module docstring. --targets: ours, ours_batch, llama_cpp (--gguf), hf, hf_cb (with
    --model_dir). --arrivals closed (each client one request after another) or poisson (--rate, --requests)."""
    if arrivals not in ("closed", "poisson"):
        raise ValueError(f"--arrivals {arrivals!r}: closed or poisson")
    levels = [int(c) for c in str(clients).replace("(", "").replace(")", "").split(",") if str(c).strip()]
    questions = [item["instruction"] for item in load_instruction_data(ROOT / "resources" / "example_infer_data.json",
                                                                         require_output=False)]
    tok = None
    if tokenizer or model_dir:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(tokenizer or model_dir)
    work = Path(tempfile.mkdtemp(prefix="bench_api-"))
    if base_url:
        names = ["url"]
    elif not model_dir:
        raise ValueError("give --base_url (a running server) or --model_dir (start servers here)")
    else:
        names = [targets] if isinstance(targets, str) else list(targets)  # fire turns "a,b" into a tuple
        names = [n.strip() for name in names for n in name.split(",") if n.strip()]
    rows = []
    for repeat in range(repeats):
        # One server at a time, in alternating order: an idle server can still hold a core (transformers'
        # continuous-batching loop polls), and the machine is shared, so order effects cancel over repeats.
        for name in names if repeat % 2 == 0 else names[::-1]:
            if name == "url":
                target = Target("url", base_url, model or "", api_key or os.environ.get("OPENAI_API_KEY", "none"))
            else:
                target = start(name, Path(model_dir), work, threads, gguf)
            try:
                target.wait_ready()
                for level in levels:
                    if arrivals == "poisson":
                        row = run_arrivals(target, level, requests, rate, questions, max_tokens, tok, stop, seed)
                    else:
                        row = run_level(target, level, max(level, min_requests), questions, max_tokens, tok, stop)
                    row["repeat"] = repeat
                    rows.append(row)
                    print(f"[bench_api] {name:6s} {level:3d} clients: {row['tokens_per_s']:7.2f} tok/s, TTFT p50 "
                          f"{percentile(row['ttfts'], 0.5):.2f} s, p95 {percentile(row['ttfts'], 0.95):.2f} s, "
                          f"{row['requests']} requests, {len(row['errors'])} errors"
                          + (f", {row['mean_in_flight']:.1f} in flight" if arrivals == "poisson" else ""), flush=True)
            finally:
                target.stop()
    summary = summarize(rows, names, levels)
    print(table(summary))
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"settings": {"max_tokens": max_tokens, "min_requests": min_requests, "repeats": repeats,
                                            "threads": threads, "model_dir": model_dir, "base_url": base_url, "stop": stop,
                                            "arrivals": arrivals, "rate": rate, "requests": requests, "seed": seed},
                               "summary": summary, "rows": rows}, ensure_ascii=False, indent=2), encoding="utf-8")
    os.replace(tmp, out)
    return summary


def summarize(rows: list[dict], names: list[str], levels: list[int]) -> list[dict]:
    summary = []
    for name in names:
        base = None
        for level in levels:
            mine = [r for r in rows if r["target"] == name and r["clients"] == level]
            rate = statistics.median(r["tokens_per_s"] for r in mine)
            ttfts = [t for r in mine for t in r["ttfts"]]
            base = rate if level == levels[0] else base
            summary.append({"target": name, "clients": level, "tokens_per_s": rate, "vs_first_level": rate / base,
                            "ttft_p50": percentile(ttfts, 0.5), "ttft_p95": percentile(ttfts, 0.95),
                            "requests": sum(r["requests"] for r in mine), "errors": sum(len(r["errors"]) for r in mine),
                            "mean_in_flight": statistics.mean(r.get("mean_in_flight", 0.0) for r in mine)})
    return summary


def table(summary: list[dict]) -> str:
    lines = ["| server | clients | tokens/s | vs 1 client | TTFT p50 | TTFT p95 | requests | errors |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for s in summary:
        lines.append(f"| {s['target']} | {s['clients']} | {s['tokens_per_s']:.1f} | {s['vs_first_level']:.2f}× | "
                     f"{s['ttft_p50']:.2f} s | {s['ttft_p95']:.2f} s | {s['requests']} | {s['errors']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    fire.Fire(main, serialize=lambda result: None)
