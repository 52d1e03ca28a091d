"""utils/lawbench/report.py: scores.json / Markdown / PNG per run, --compare, LawBench's published averages."""

import json
from pathlib import Path

import pytest

from utils.lawbench import report as R
from utils.lawbench.tasks import TASKS

LAWBENCH = Path(__file__).resolve().parent.parent.parent / "shared" / "lawbench"
needs_lawbench = pytest.mark.skipif(not (LAWBENCH / "predictions").is_dir(), reason=f"LawBench copy not found at {LAWBENCH}")


def _task(tid, score, abstention=0.0, n=4):
    t = TASKS[tid]
    return {"task": tid, "name": t.name, "name_en": t.name_en, "metric": t.metric, "score": score,
            "abstention": abstention, "n": n}


def _is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_write_report(tmp_path):
    tasks = [_task("1-1", 0.25), _task("3-3", 0.5, abstention=0.25)]
    data = R.write_report(tmp_path / "run", tasks, {"model": "tiny"})
    assert data["average"] == {"score": 0.375, "abstention": 0.125, "tasks": 2, "items": 8}
    assert json.loads((tmp_path / "run" / "scores.json").read_text(encoding="utf-8")) == data
    table = (tmp_path / "run" / "scores.md").read_text(encoding="utf-8")
    assert "| 3-3 | 罪名预测 | f1 | 50.00 | 25.0% | 4 |" in table
    assert "**37.50**" in table
    assert _is_png(tmp_path / "run" / "scores.png")
    assert not list((tmp_path / "run").glob(".*tmp*"))  # atomic writes leave no temp files


def test_compare_runs_with_different_tasks(tmp_path):
    R.write_report(tmp_path / "base", [_task("1-1", 0.1), _task("2-10", 0.2, 0.5)])
    R.write_report(tmp_path / "sft", [_task("1-1", 0.3), _task("3-3", 0.4)])
    table = R.compare([tmp_path / "base", tmp_path / "sft"], tmp_path / "cmp")
    lines = table.splitlines()
    assert lines[0] == "| task | name | base | sft |"
    assert [line.split(" | ")[0] for line in lines[2:5]] == ["| 1-1", "| 2-10", "| 3-3"]  # numeric task order
    assert "| 2-10 | 触发词提取 | 20.00 (50%) | – |" in table
    assert "**15.00** (2 tasks)" in table and "**35.00** (2 tasks)" in table
    assert (tmp_path / "cmp" / "compare.md").read_text(encoding="utf-8") == table
    assert _is_png(tmp_path / "cmp" / "compare.png")


def test_compare_errors(tmp_path):
    with pytest.raises(R.ReportError, match="no scores.json"):
        R.compare([tmp_path])
    R.write_report(tmp_path / "a", [_task("1-1", 0.1)])
    with pytest.raises(R.ReportError, match="distinct label"):
        R.compare([tmp_path / "a", tmp_path / "a"])
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "scores.json").write_text("{", encoding="utf-8")
    with pytest.raises(R.ReportError, match="scores.json:1: invalid JSON"):
        R.load_scores(tmp_path / "b")


def test_published_scores_from_csv(tmp_path):
    csv = tmp_path / "results.csv"
    csv.write_text("task,model_name,score,abstention_rate\n1-1,m,0.5,0.0\n1-2,m,0.25,0.5\n1-1,other,1,0\n",
                   encoding="utf-8")
    assert R.published_scores(csv, {"m": "M"}) == [
        {"model": "M", "model_name": "m", "tasks": 2, "score": 0.375, "abstention": 0.25}]
    with pytest.raises(R.ReportError, match="no rows for model 'x'"):
        R.published_scores(csv, {"x": "X"})
    csv.write_text("task,model_name,score,abstention_rate\n1-1,m,n/a,0\n", encoding="utf-8")
    with pytest.raises(R.ReportError, match="results.csv:2"):
        R.published_scores(csv, {"m": "M"})


@needs_lawbench
def test_published_lawbench_averages_match_the_issue():
    rows = R.published_scores(LAWBENCH / "predictions" / "zero_shot" / "results.csv")
    got = {r["model"]: round(100 * r["score"], 2) for r in rows}
    assert got == {"LaWGPT-7B-beta1.0": 1.51, "LaWGPT-7B-beta1.1": 9.91, "ChatLaw-13B": 32.76,
                   "fuzi.mingcha-7B": 33.05, "GPT-3.5-turbo": 42.15, "GPT-4": 52.35}
    assert all(r["tasks"] == 20 for r in rows)


def test_cli(tmp_path, capsys):
    R.write_report(tmp_path / "a", [_task("1-1", 0.1)])
    R.main(["--compare", str(tmp_path / "a"), "--labels", "base", "--output_dir", str(tmp_path / "c")])
    assert "| task | name | base |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        R.main([])
