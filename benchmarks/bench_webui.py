"""Time to first streamed token and tokens/s as a user of the web UI sees them (through gradio_client).

    python benchmarks/bench_webui.py --base_model models/base_models/gemma-3-270m   # starts webui.py itself
    python benchmarks/bench_webui.py --tiny                                          # the tests' tiny random LLaMA
    python benchmarks/bench_webui.py --url http://127.0.0.1:7860 --base_model DIR    # a server already running

Each question is sent with ``Client.submit`` on the /chat endpoint (greedy, streaming on, the UI's default
repetition penalty) and every streamed update is time-stamped on arrival. Reported per question:
- time to first token (TTFT): submit → first update holding a non-empty answer (queue, prompt, first token);
- stream rate: answer tokens after the first / (last update − first update): what the reader watches;
- end-to-end rate: answer tokens / (last update − submit).
Answer tokens are counted exactly: after the server has stopped, the same greedy generation is run once more
in this process with utils/inference/engine.py (``Generation.new_tokens``), and its text must equal what the UI showed
(a check that the UI serves the engine's answer). Gradio may merge updates that arrive within a few ms, so
for a very fast model the stream rate is a transport figure; TTFT and end-to-end are not affected. One
warm-up question is sent first and not counted. Results go to --output (JSON, written atomically) and stdout.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import fire

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from utils.inference.engine import Engine, GenerationParams  # noqa: E402
from utils.inference.webui_app import example_questions  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(base_model: str, port: int, log_path: Path) -> subprocess.Popen:
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, str(ROOT / "webui.py"), "--base_model", base_model,
                                 "--server_port", str(port)], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"webui.py exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.5)
    proc.terminate()
    raise RuntimeError(f"webui.py did not listen on port {port} within 300 s")


def timed_answer(client, question: str, max_new_tokens: int) -> tuple[float, float, float, str]:
    """(submit time, first-token time, last-update time, final answer) for one streamed question."""
    start = time.perf_counter()
    job = client.submit(question, 0.0, 0.9, 40, 1, max_new_tokens, 1.1, True, api_name="/chat")
    first = last = None
    answer = ""
    for reply in job:
        text = "".join(m["content"] for m in reply if not (m.get("metadata") or {}).get("title"))
        now = time.perf_counter()
        if text and first is None:
            first = now
        if text:
            last, answer = now, text
    errors = [m["content"] for m in job.result() if (m.get("metadata") or {}).get("title", "").startswith("⚠️")]
    if errors or first is None:
        raise RuntimeError(f"no answer for {question!r}: {errors or job.result()}")
    return start, first, last, answer


def main(base_model: str | None = None, tiny: bool = False, url: str | None = None, max_new_tokens: int = 128,
         questions: int = 6, output: str | None = None) -> None:
    """Measure TTFT and tokens/s through the web UI.

    Args:
        base_model: model directory to serve (and to count the answers' tokens with).
        tiny: serve the tests' tiny random LLaMA instead (built in a temp dir).
        url: an already running webui.py serving --base_model (default: start one on a free port).
        max_new_tokens: answer budget per question.
        questions: how many of the example questions to ask (after one warm-up).
        output: JSON file for the results (default: print only).
    """
    from gradio_client import Client

    work = Path(tempfile.mkdtemp(prefix="bench-webui-"))
    if tiny:
        from tiny_model import build_tiny_model

        base_model = str(build_tiny_model(work / "tiny"))
    if not base_model:
        raise ValueError("pass --base_model DIR or --tiny")
    proc = None
    if url is None:
        port = free_port()
        proc = start_server(base_model, port, work / "server.log")
        url = f"http://127.0.0.1:{port}"
    try:
        client = Client(url, verbose=False)
        asked = example_questions()[:questions]
        timed_answer(client, "你好", 8)  # warm-up: first request, thread pools, caches
        timings = []
        for question in asked:
            client.reset_session()  # each question starts a new conversation: no history in the prompt
            timings.append(timed_answer(client, question, max_new_tokens))
            print(f"answered in {timings[-1][2] - timings[-1][0]:.2f} s: {question}", flush=True)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=60)
    engine = Engine.from_pretrained(base_model)  # only now: the server had the CPU to itself
    rows = []
    for question, (start, first, last, answer) in zip(asked, timings):
        generation = engine.generate([engine.prompt(question)], GenerationParams(max_new_tokens=max_new_tokens))[0]
        if generation.text != answer:
            raise RuntimeError(f"the UI's answer to {question!r} differs from the engine's: {answer!r} vs "
                               f"{generation.text!r}")
        n = generation.new_tokens
        stream_rate = (n - 1) / (last - first) if last > first and n > 1 else float("nan")
        rows.append({"question": question, "ttft_s": round(first - start, 3), "answer_tokens": n,
                     "finish": generation.finish_reason, "stream_tok_s": round(stream_rate, 1),
                     "end_to_end_tok_s": round(n / (last - start), 1)})
        print(f"{rows[-1]['ttft_s']:7.3f} s  {n:4d} tok  {rows[-1]['stream_tok_s']:6.1f} tok/s  {question}")
    summary = {
        "model": base_model if not tiny else "tiny random LLaMA (tests/tiny_model.py)",
        "max_new_tokens": max_new_tokens,
        "median_ttft_s": round(statistics.median(r["ttft_s"] for r in rows), 3),
        "median_stream_tok_s": round(statistics.median(r["stream_tok_s"] for r in rows), 1),
        "median_end_to_end_tok_s": round(statistics.median(r["end_to_end_tok_s"] for r in rows), 1),
        "rows": rows,
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "rows"}, ensure_ascii=False))
    if output:
        tmp = Path(output).with_suffix(".tmp")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(summary, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, output)


if __name__ == "__main__":
    fire.Fire(main)
