"""scripts/demo.sh in QUICK mode on the tiny model, in a copy of the repository with no ../shared beside it
(as a user has it): every stage of the recipe runs, a rerun skips them all."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from utils.lawbench import tasks as L

ROOT = Path(__file__).resolve().parent.parent
STEPS = ["1. statute corpus", "1b. LawBench test sets", "1c. statute retriever trained",
         "2. legal vocabulary", "3a. continued pretraining",
         "3b. merge the pretraining", "4. knowledge-based instruction data", "5. LoRA instruction tuning",
         "5b. preference pairs", "5c. DPO on the SFT adapter", "6. merge into", "7a. answer the example questions", "7b. the same with statute retrieval",
         "8a. LawBench subset: base model", "8b. LawBench subset: demo model",
         "8c. LawBench subset: demo model + retrieval", "8d. comparison"]


def _lawbench_original(directory: Path) -> Path:
    """LawBench's own layout (data/{zero_shot,one_shot}/<task>.json), two items per task, so step 1b
    prepares the test sets from it instead of downloading the wheel."""
    answers = {"1-1": "盗窃公私财物，数额较大的……", "3-3": "罪名:盗窃"}
    questions = {"1-1": "刑法第二百六十四条的内容是什么?"}
    for shots in ("zero_shot", "one_shot"):
        folder = directory / "data" / shots
        folder.mkdir(parents=True)
        for task in L.TASKS:
            items = [{"instruction": f"任务{task}的说明。", "question": questions.get(task, f"事实:被告人入户盗窃手机一部。（{i}）"),
                      "answer": answers.get(task, "答案:无")} for i in range(2)]
            (folder / f"{task}.json").write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")
    return directory


def user_clone(tmp_path: Path) -> Path:
    """The repository's files (tracked and new, not ignored) copied to a folder with no ../shared beside it:
    what a user who cloned the project has. The venv is the running one (LAWGPT_VENV), nothing is installed."""
    clone = tmp_path / "user" / "lawgpt"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, clone / name)
    assert not (clone.parent / "shared").exists()
    return clone


@pytest.mark.slow
def test_quick_demo_runs_every_stage_in_a_fresh_clone(tiny_model_dir, tmp_path):
    clone = user_clone(tmp_path)
    env = {**os.environ, "QUICK": "1", "DPO": "1", "BASE_MODEL": str(tiny_model_dir), "OUT": str(tmp_path / "out"),
           "FINAL_MODEL": str(tmp_path / "lawgpt-demo"), "CORPUS_DIR": str(tmp_path / "pretrain"),
           "LAWBENCH_DIR": str(_lawbench_original(tmp_path / "lawbench-original")), "LAWGPT_VENV": sys.prefix,
           "LAWGPT_RETRIEVER_DIR": str(tmp_path / "retriever")}
    env.pop("LAWBENCH_DATA", None)  # the default: <clone>/data/eval/lawbench, prepared by step 1b
    run = subprocess.run(["bash", str(clone / "scripts" / "demo.sh")], env=env, capture_output=True, text=True,
                         timeout=900, cwd=clone)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    for step in STEPS:
        assert f"[demo] {step}" in run.stdout, step
    # the instruction data was filtered against the test sets step 1b prepared, before step 4 needed them
    assert (clone / "data" / "eval" / "lawbench" / "manifest.json").is_file()
    assert "LawBench: 80 items from data/eval/lawbench; 1 articles asked in 1-1" in run.stdout
    # the retriever is trained (step 1c) before the data that uses it, and --rag retrieves with it from then on
    assert json.loads((tmp_path / "retriever" / "run_info.json").read_text(encoding="utf-8"))["training_questions"] == 300
    assert "[knowledge_instruct] retrieved articles come from: trained" in run.stdout
    assert "no trained retriever" not in run.stderr
    # some grounded answers come after an earlier turn, so the model learns to answer follow-ups (issue 28)
    sft = [json.loads(line) for line in (tmp_path / "out" / "sft_data.jsonl").read_text(encoding="utf-8").splitlines()]
    assert any(item.get("history") for item in sft) and "put in a conversation" in run.stdout

    dpo = json.loads((tmp_path / "out" / "dpo" / "run_info.json").read_text(encoding="utf-8"))
    assert dpo["stage"] == "dpo" and dpo["pairs"]["train"] > 0 and dpo["sft_adapter"].endswith("sft")
    merged = json.loads((tmp_path / "lawgpt-demo" / "run_info.json").read_text(encoding="utf-8"))
    assert merged["adapter_run_info"]["stage"] == "dpo" and merged["prompt_template"] == "law_rag"  # DPO merged
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

    rerun = subprocess.run(["bash", str(clone / "scripts" / "demo.sh")], env=env, capture_output=True, text=True,
                           timeout=300, cwd=clone)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert rerun.stdout.count("done already") == len(STEPS)
