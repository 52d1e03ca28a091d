"""scripts/demo.sh in QUICK mode on the tiny model: every stage of the recipe runs, a rerun skips them all."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from tools import prepare_lawbench as P

ROOT = Path(__file__).resolve().parent.parent
STEPS = ["1. statute corpus", "2. legal vocabulary", "3a. continued pretraining", "3b. merge the pretraining",
         "4. knowledge-based instruction data", "5. LoRA instruction tuning", "6. merge into",
         "7a. answer the example questions", "7b. the same with statute retrieval", "8b. LawBench subset: base model",
         "8c. LawBench subset: demo model", "8d. LawBench subset: demo model + retrieval", "8e. comparison"]


def _lawbench(directory: Path) -> Path:
    """Two tasks × two items in the prepared format, so the demo needs no download."""
    items = {
        "1-1": ("请回答下面法条的具体内容。", "刑法第二百六十四条的内容是什么?", "盗窃公私财物，数额较大的……"),
        "3-3": ("请你模拟法官依据下面事实给出罪名。", "事实:被告人入户盗窃手机一部。", "罪名:盗窃"),
    }
    data = {(shots, task): [{"task": task, "index": i, "instruction": ins, "question": q, "answer": a}
                            for i in range(2)]
            for task, (ins, q, a) in items.items() for shots in ("zero_shot", "one_shot")}
    P.write_dataset(data, directory, {"kind": "test"})
    return directory


@pytest.mark.slow
def test_quick_demo_runs_every_stage(tiny_model_dir, tmp_path):
    env = {**os.environ, "QUICK": "1", "BASE_MODEL": str(tiny_model_dir), "OUT": str(tmp_path / "out"),
           "FINAL_MODEL": str(tmp_path / "lawgpt-demo"), "CORPUS_DIR": str(tmp_path / "pretrain"),
           "LAWBENCH_DATA": str(_lawbench(tmp_path / "lawbench"))}
    run = subprocess.run(["bash", str(ROOT / "scripts" / "demo.sh")], env=env, capture_output=True, text=True,
                         timeout=900, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    for step in STEPS:
        assert f"[demo] {step}" in run.stdout, step

    model = tmp_path / "lawgpt-demo"
    assert (model / "model.safetensors").is_file() and (model / "tokenizer_config.json").is_file()
    # the legal tokenizer travelled through pretraining, merge and fine-tuning into the final model
    report = json.loads((tmp_path / "out" / "tokenizer" / "report.json").read_text(encoding="utf-8"))
    final_config = json.loads((model / "config.json").read_text(encoding="utf-8"))
    assert report["added"] > 0 and final_config["vocab_size"] >= report["merged_size"]
    answers = [json.loads(line) for line in (tmp_path / "out" / "infer.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(answers) == 6
    with_rag = [json.loads(line) for line in (tmp_path / "out" / "infer_rag.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(with_rag) == 6 and all(r["articles"] for r in with_rag)
    table = (tmp_path / "out" / "eval-compare" / "compare.md").read_text(encoding="utf-8")
    assert "| base | demo | demo+rag |" in table and "| 3-3 |" in table

    rerun = subprocess.run(["bash", str(ROOT / "scripts" / "demo.sh")], env=env, capture_output=True, text=True,
                           timeout=300, cwd=ROOT)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert rerun.stdout.count("done already") == len(STEPS) + 1  # + 8a, prepared by the test
