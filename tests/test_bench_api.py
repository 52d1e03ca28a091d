"""benchmarks/bench_api.py's open-loop mode (--arrivals poisson) against our API on the tiny model."""

from __future__ import annotations

import sys

from api_harness import KEY, MODEL, QUESTIONS, ROOT, Server

from utils.inference.api_app import APISettings
from utils.inference.engine import Engine

sys.path.insert(0, str(ROOT / "benchmarks"))


def test_poisson_arrivals_send_every_request_on_a_seeded_schedule(tiny_model_dir):
    import bench_api

    engine = Engine.from_pretrained(str(tiny_model_dir), batch_wait_ms=5)
    server = Server(engine, APISettings(MODEL, api_key=KEY))
    try:
        target = bench_api.Target("ours", server.url, MODEL, KEY)
        row = bench_api.run_arrivals(target, 4, 8, 20.0, QUESTIONS, 6, None, seed=1)
        assert row["requests"] == 8 and row["errors"] == [] and len(row["ttfts"]) == 8
        assert all(t > 0 for t in row["ttfts"]) and 0 < row["mean_in_flight"] <= 4 and row["tokens"] > 0
        summary = bench_api.summarize([{**row, "repeat": 0}], ["ours"], [4])
        assert summary[0]["requests"] == 8 and summary[0]["mean_in_flight"] == row["mean_in_flight"]
    finally:
        server.stop()
        engine.close()
