"""benchmarks/bench_dpo.py: a DPO step vs an SFT step on the tiny model, each run as its own process (slow)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_dpo  # noqa: E402

QUESTIONS = ["盗窃罪如何处罚？", "什么是诈骗罪？", "抢劫罪怎么判？", "故意伤害罪的刑罚是什么？"]


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.slow
def test_dpo_step_vs_sft_step_on_the_tiny_model(tiny_model_dir, tmp_path):
    sft = write(tmp_path / "sft.jsonl", [{"instruction": q, "input": "", "output": "根据《刑法》第二百六十四条的规定处罚。"}
                                          for q in QUESTIONS])
    pref = write(tmp_path / "pref.jsonl", [{"instruction": q, "chosen": "根据《刑法》第二百六十四条的规定处罚。",
                                            "rejected": "根据《刑罚法》第九百条的规定处罚。"} for q in QUESTIONS])
    out = tmp_path / "summary.json"
    args = bench_dpo.parse_args(["--base_model", str(tiny_model_dir), "--sft_data", str(sft), "--pref_data", str(pref),
                                 "--max_steps", "2", "--rounds", "1", "--micro_batch", "2", "--cutoff_len", "256",
                                 "--output", str(out)])
    summary = bench_dpo.main(args)
    assert json.loads(out.read_text(encoding="utf-8")) == summary
    sft_row, dpo_row = summary["settings"]["sft"], summary["settings"]["dpo"]
    assert sft_row["s_per_step"] > 0 and dpo_row["s_per_step"] > 0 and sft_row["peak_rss_gb"] > 0
    # A pair holds chosen and rejected: more tokens per step than SFT examples of one answer each.
    assert dpo_row["tokens_per_step"] > sft_row["tokens_per_step"]
    assert summary["step_time_ratio"] == round(dpo_row["s_per_step"] / sft_row["s_per_step"], 2)


def test_bad_arguments_are_one_line_errors(tmp_path, capsys):
    with pytest.raises(SystemExit):
        bench_dpo.parse_args(["--base_model", str(tmp_path / "none"), "--sft_data", "x", "--pref_data", "y"])
    assert "--base_model" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench_dpo.parse_args(["--base_model", str(tmp_path), "--sft_data", str(tmp_path), "--pref_data", str(tmp_path),
                              "--rounds", "0"])
    assert "--rounds must be >= 1" in capsys.readouterr().err
