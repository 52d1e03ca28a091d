"""evaluate.py end to end on the tiny model: 3 tasks × 4 items, files and chart, resume, truncation, compare."""

import json
from pathlib import Path

import pytest

import evaluate
from tools import prepare_lawbench as P

ITEMS = {
    "1-2": ("请你运用法律知识从A,B,C,D中选出一个正确的答案。", "下列哪项正确?A:甲;B:乙;C:丙;D:丁", "正确答案：B。"),
    "3-3": ("请你模拟法官依据下面事实给出罪名，将答案写在[罪名]和<eoa>之间。", "事实:被告人盗窃手机一部。", "罪名:盗窃"),
    "3-4": ("根据下列事实预测判决刑期。", "事实:被告人盗窃手机一部。罪名:盗窃。", "刑期:6个月"),
}


def _unique(task: str, i: int) -> str:
    """30 characters no other item shares (so that only the copied item looks contaminated)."""
    return "".join(chr(0x4E00 + 5000 * list(ITEMS).index(task) + 1000 * i + k) for k in range(30))


@pytest.fixture()
def data_dir(tmp_path):
    """Prepared data for 3 tasks × 4 items; item 3 of 3-4 is far longer than the tiny model's context."""
    data = {}
    for task, (instruction, question, answer) in ITEMS.items():
        for shots in ("zero_shot", "one_shot"):
            data[(shots, task)] = [
                {"task": task, "index": i, "instruction": instruction,
                 "question": question * (400 if (task, i) == ("3-4", 3) else 1) + _unique(task, i), "answer": answer}
                for i in range(5)
            ]
    P.write_dataset(data, tmp_path / "lawbench", {"kind": "test"})
    return tmp_path / "lawbench"


def _run(model, data_dir, out, *extra):
    return evaluate.main(["--base_model", str(model), "--tasks", "all", "--limit", "4", "--max_new_tokens", "6",
                          "--batch_size", "3", "--data_dir", str(data_dir), "--output_dir", str(out), *extra])


@pytest.mark.slow
def test_end_to_end_resume_and_compare(tiny_model_dir, data_dir, tmp_path):
    out = tmp_path / "run"
    train = tmp_path / "train.json"  # holds one test item verbatim: it must be reported as contaminated
    train.write_text(json.dumps([{"instruction": "x", "input": ITEMS["3-3"][1] + _unique("3-3", 0) + "\n罪名:盗窃", "output": "y"}],
                                ensure_ascii=False), encoding="utf-8")
    result = _run(tiny_model_dir, data_dir, out, "--train_data", str(train), "--ngram", "5")
    assert result["generated"] == 12
    for name in ("predictions.jsonl", "details.jsonl", "scores.json", "scores.md", "scores.png", "run_info.json"):
        assert (out / name).is_file(), name
    assert (out / "scores.png").read_bytes()[:4] == b"\x89PNG"
    scores = json.loads((out / "scores.json").read_text(encoding="utf-8"))
    rows = {t["task"]: t for t in scores["tasks"]}
    assert list(rows) == ["1-2", "3-3", "3-4"] and all(t["n"] == 4 for t in rows.values())
    assert all(0 <= t["score"] <= 1 and 0 <= t["abstention"] <= 1 for t in rows.values())
    assert rows["3-4"]["truncated"] == 1 and rows["1-2"]["truncated"] == 0
    assert rows["3-3"]["contaminated"] == pytest.approx(0.25) and rows["1-2"]["contaminated"] == 0
    assert scores["meta"]["contamination"]["items"]["3-3"] == [0]
    details = [json.loads(line) for line in (out / "details.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(details) == 12 and {"extracted", "abstained", "score"} <= set(details[0])
    assert "| 3-3 | 罪名预测 | f1 |" in (out / "scores.md").read_text(encoding="utf-8")

    # resume: nothing to do; then lose two finished items and a torn line, and only those are redone
    assert _run(tiny_model_dir, data_dir, out)["generated"] == 0
    lines = (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    (out / "predictions.jsonl").write_text("\n".join(lines[:10]) + "\n" + lines[10][:15], encoding="utf-8")
    assert _run(tiny_model_dir, data_dir, out)["generated"] == 2
    redone = [json.loads(line) for line in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(redone) == 12 and len({(r["task"], r["index"]) for r in redone}) == 12
    assert [r["prediction"] for r in redone[10:]] == [json.loads(line)["prediction"] for line in lines[10:]]  # greedy

    # a different setting in the same directory is refused
    with pytest.raises(evaluate.EvalError, match="different shots"):
        _run(tiny_model_dir, data_dir, out, "--shots", "1")

    other = tmp_path / "run1shot"
    _run(tiny_model_dir, data_dir, other, "--shots", "1", "--tasks", "3-3")
    table = evaluate.main(["--compare", str(out), str(other), "--output_dir", str(tmp_path / "cmp")])["compare"]
    assert "| task | name | run | run1shot |" in table and "| 1-2 | 知识问答 |" in table
    assert (tmp_path / "cmp" / "compare.png").is_file()


def test_argument_errors(data_dir, tmp_path):
    with pytest.raises(SystemExit):
        evaluate.main(["--tasks", "1-2", "--output_dir", str(tmp_path)])  # no model
    with pytest.raises(SystemExit):
        evaluate.main(["--base_model", "x", "--limit", "0", "--output_dir", str(tmp_path)])
    with pytest.raises(evaluate.lb.LawBenchError, match="unknown LawBench task"):
        evaluate.main(["--base_model", "x", "--tasks", "9-9", "--output_dir", str(tmp_path)])
    with pytest.raises(evaluate.lb.LawBenchError, match="no prepared LawBench data for task 2-8"):
        evaluate.main(["--base_model", "x", "--tasks", "2-8", "--data_dir", str(data_dir), "--output_dir", str(tmp_path)])


def test_script_exits_with_one_line(tmp_path):
    import subprocess
    import sys

    root = Path(evaluate.__file__).resolve().parent
    done = subprocess.run([sys.executable, str(root / "evaluate.py"), "--base_model", "x", "--tasks", "1-1",
                           "--data_dir", str(tmp_path), "--output_dir", str(tmp_path / "o")],
                          capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.strip().startswith("evaluate: error:") and "prepare_lawbench.py" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_rag_puts_retrieved_articles_in_the_prompt(tiny_model_dir, data_dir, tmp_path, monkeypatch):
    prompts = []
    real = evaluate.fit_prompt

    def spy(engine, item, max_new_tokens, instruction=None):
        prompt = real(engine, item, max_new_tokens, instruction)
        prompts.append(prompt[0])
        return prompt

    monkeypatch.setattr(evaluate, "fit_prompt", spy)
    out = tmp_path / "rag"
    evaluate.main(["--base_model", str(tiny_model_dir), "--tasks", "3-3", "--limit", "2", "--max_new_tokens", "4",
                   "--data_dir", str(data_dir), "--output_dir", str(out), "--rag", "--rag_top_k", "2"])
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(records) == 2 and all(len(r["retrieved"]) == 2 for r in records)
    # the question is about a stolen phone: 刑法 第二百六十四条 (盗窃) is retrieved and shown to the model
    assert any("第二百六十四条" in c for c in records[0]["retrieved"])
    assert all(evaluate.RAG_HEADER in p and records[0]["retrieved"][0] in p for p in prompts[:1])
    assert json.loads((out / "run_info.json").read_text(encoding="utf-8"))["rag_top_k"] == 2
    with pytest.raises(evaluate.EvalError, match="different rag_top_k"):  # resuming without --rag is refused
        evaluate.main(["--base_model", str(tiny_model_dir), "--tasks", "3-3", "--limit", "2", "--max_new_tokens", "4",
                       "--data_dir", str(data_dir), "--output_dir", str(out)])


def test_rag_hybrid_without_vectors_fails_before_the_model_loads(data_dir, tmp_path, monkeypatch):
    from tiny_model import write_tiny_statute_db

    from utils import rag
    from utils.retrieval import BM25Index
    from utils.statutes import StatuteStore

    write_tiny_statute_db(tmp_path / "laws.db")
    tiny = BM25Index.load(StatuteStore.load(tmp_path / "laws.db"), cache_dir=tmp_path / "cache")
    monkeypatch.setattr(rag, "default_index", lambda: tiny)
    with pytest.raises(ValueError, match="--rag_retriever hybrid"):
        evaluate.main(["--base_model", str(tmp_path / "no-model"), "--tasks", "3-3", "--limit", "1",
                       "--data_dir", str(data_dir), "--output_dir", str(tmp_path / "out"), "--rag",
                       "--rag_retriever", "hybrid"])
