"""evaluate.py end to end on the tiny model: 3 tasks × 4 items, files and chart, resume, truncation, compare;
--score_predictions on LawBench's raw layout and on our run directories (no model)."""

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
    for name in ("predictions.jsonl", "details.jsonl", "scores.json", "scores.md", "scores.png", "run_info.json",
                 "lawbench/1-2.json", "lawbench/3-3.json", "lawbench/3-4.json"):
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
    predictions = {(r["task"], r["index"]): r["prediction"] for r in map(json.loads, (out / "predictions.jsonl").open())}
    raw = json.loads((out / "lawbench" / "3-4.json").read_text(encoding="utf-8"))
    assert list(raw) == ["0", "1", "2", "3"] and raw["1"]["prediction"] == predictions[("3-4", 1)]
    assert raw["1"]["refr"] == "刑期:6个月" and raw["1"]["origin_prompt"][0]["prompt"].startswith(ITEMS["3-4"][0] + "\n")
    # the run's LawBench-layout folder, and the run directory itself, score to the run's own numbers
    for source in (out / "lawbench", out):
        again = evaluate.main(["--score_predictions", str(source), "--data_dir", str(data_dir),
                               "--output_dir", str(tmp_path / f"rescored-{source.name}")])
        assert [(t["task"], t["score"], t["abstention"], t["n"]) for t in again["tasks"]] == \
            [(t["task"], t["score"], t["abstention"], t["n"]) for t in scores["tasks"]]

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


def _raw_folder(folder: Path) -> Path:
    """LawBench's raw layout, as it publishes predictions: 2 tasks, hand-written answers."""
    entries = {"3-4": [("刑期:4个月。依照刑法第二百六十四条…或者无期徒刑。", "刑期:4个月"), ("不清楚", "刑期:12个月"),
                       ("无期徒刑", "刑期:无期")],
               "1-2": [("[正确答案]B<eoa>", "正确答案：B。"), ("A", "正确答案：C。")]}
    folder.mkdir(parents=True)
    for task, rows in entries.items():
        raw = {str(i): {"origin_prompt": [{"role": "HUMAN", "prompt": "问题"}], "prediction": p, "refr": g}
               for i, (p, g) in enumerate(rows)}
        (folder / f"{task}.json").write_text(json.dumps(raw, ensure_ascii=False), encoding="utf-8")
    (folder / "results.csv").write_text("not a task\n", encoding="utf-8")  # other files are left alone
    return folder


def test_score_lawbench_raw_predictions_without_a_model(tmp_path):
    out = tmp_path / "scored"
    result = evaluate.main(["--score_predictions", str(_raw_folder(tmp_path / "GPT4")), "--output_dir", str(out)])
    rows = {t["task"]: t for t in result["tasks"]}
    assert list(rows) == ["1-2", "3-4"]
    assert (rows["1-2"]["score"], rows["1-2"]["abstention"]) == (0.5, 0.0)
    assert (rows["3-4"]["score"], rows["3-4"]["abstention"], rows["3-4"]["scored"]) == (0.5, 1 / 3, 2)
    for name in ("scores.json", "scores.md", "scores.png", "details.jsonl"):
        assert (out / name).is_file(), name
    details = [json.loads(line) for line in (out / "details.jsonl").read_text(encoding="utf-8").splitlines()]
    assert details[2] == {"task": "3-4", "index": 0, "extracted": 4, "abstained": False, "score": 1.0}
    assert details[4]["score"] is None and "skipped" in details[4]
    assert json.loads((out / "scores.json").read_text(encoding="utf-8"))["meta"]["scorer"].startswith("LawBench")
    with pytest.raises(evaluate.lb.LawBenchError, match="no LawBench predictions"):
        evaluate.main(["--score_predictions", str(tmp_path), "--output_dir", str(tmp_path / "x")])
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "1-2.json").write_text('{"1": {"prediction": "A", "refr": "正确答案：A。"}}', encoding="utf-8")
    with pytest.raises(evaluate.lb.LawBenchError, match='no entry "0"'):
        evaluate.main(["--score_predictions", str(bad), "--output_dir", str(tmp_path / "y")])


def test_rescore_a_run_directory_without_a_model(data_dir, tmp_path):
    """An earlier run (predictions.jsonl + run_info.json) is scored again against the data it was run on."""
    from utils.common.datafiles import files_sha256

    run = tmp_path / "old-run"
    run.mkdir()
    info = {"tasks": ["3-4"], "shots": 0, "limit": 2, "data_manifest_sha256": files_sha256([data_dir / "manifest.json"]),
            "data_source": {"kind": "test"}}
    (run / "run_info.json").write_text(json.dumps(info), encoding="utf-8")
    answers = ["刑期:6个月，本案不属于应当判处死刑的情形。", "有期徒刑六个月"]
    (run / "predictions.jsonl").write_text("".join(
        json.dumps({"key": f"3-4:{i}", "task": "3-4", "index": i, "prediction": a, "truncated": False},
                   ensure_ascii=False) + "\n" for i, a in enumerate(answers)), encoding="utf-8")
    result = evaluate.main(["--score_predictions", str(run), "--data_dir", str(data_dir), "--output_dir", str(run)])
    assert (result["tasks"][0]["score"], result["tasks"][0]["n"]) == (1.0, 2)
    assert json.loads((run / "lawbench" / "3-4.json").read_text(encoding="utf-8"))["1"]["prediction"] == answers[1]
    with pytest.raises(evaluate.EvalError, match="other prepared data"):
        other = tmp_path / "other"
        P.write_dataset({("zero_shot", "3-4"): [{"task": "3-4", "index": 0, "instruction": "i", "question": "q",
                                                 "answer": "刑期:1个月"}]}, other, {"kind": "other"})
        evaluate.main(["--score_predictions", str(run), "--data_dir", str(other), "--output_dir", str(tmp_path / "z")])
    info["limit"] = 3  # a run cut short: the missing item is named
    (run / "run_info.json").write_text(json.dumps(info), encoding="utf-8")
    with pytest.raises(evaluate.EvalError, match="no prediction for 1 item.*task 3-4 .first: 2."):
        evaluate.main(["--score_predictions", str(run), "--data_dir", str(data_dir), "--output_dir", str(run)])


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

    from utils.legal import rag
    from utils.legal.bm25 import BM25Index
    from utils.legal.statutes import StatuteStore

    write_tiny_statute_db(tmp_path / "laws.db")
    tiny = BM25Index.load(StatuteStore.load(tmp_path / "laws.db"), cache_dir=tmp_path / "cache")
    monkeypatch.setattr(rag, "default_index", lambda: tiny)
    with pytest.raises(ValueError, match="--rag_retriever hybrid"):
        evaluate.main(["--base_model", str(tmp_path / "no-model"), "--tasks", "3-3", "--limit", "1",
                       "--data_dir", str(data_dir), "--output_dir", str(tmp_path / "out"), "--rag",
                       "--rag_retriever", "hybrid"])
