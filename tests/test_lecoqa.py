"""LeCoQA's metrics (utils/lecoqa/): the published METEOR and BLEU of every published run, reproduced from its
generated answers; and evaluate.py --benchmark lecoqa --score_predictions on its own."""

import json
from pathlib import Path

import pytest

import evaluate
from utils.common.datafiles import DataError
from utils.lecoqa.metrics import read_answers, score_answers
from utils.lecoqa.published import PUBLISHED, published

LECOQA = Path(__file__).resolve().parents[2] / "shared" / "lecoqa"
needs_lecoqa = pytest.mark.skipif(not (LECOQA / "evaluation" / "expected.jsonl").is_file(),
                                  reason=f"LeCoQA not found at {LECOQA} (a checkout of oneal2000/LeCoQA)")


@needs_lecoqa
def test_every_published_run_is_reproduced_to_0_001():
    expected = read_answers(LECOQA / "evaluation" / "expected.jsonl")
    assert len(expected) == 309 and len(PUBLISHED) == 20
    for run in PUBLISHED:
        scores = score_answers(expected, read_answers(LECOQA / "baseline_results" / f"{run}.jsonl"))
        for metric in ("METEOR", "BLEU"):
            assert scores[metric] == pytest.approx(published(run, metric), abs=0.001), (run, metric)


@needs_lecoqa
def test_evaluate_scores_a_file_of_answers(tmp_path, capsys):
    run = LECOQA / "baseline_results" / "gpt" / "RAG.jsonl"
    data = evaluate.main(["--benchmark", "lecoqa", "--score_predictions", str(run), "--lecoqa_dir", str(LECOQA),
                          "--output_dir", str(tmp_path)])
    assert round(data["METEOR"], 4) == 0.2974 and round(data["BLEU"], 4) == 0.1012 and data["n"] == 309
    written = json.loads((tmp_path / "scores.json").read_text(encoding="utf-8"))
    assert written["METEOR"] == data["METEOR"] and len(written["items"]) == 309
    table = (tmp_path / "scores.md").read_text(encoding="utf-8")
    assert "| Black Box LLM (GPT) (published) | RAG | 0.1845 | 0.2974 | 0.7437 | 0.1012 |" in table
    assert "| RAG (ours) | | – | 0.2974 | – | 0.1012 |" in table  # never a BERTScore or LLM-Eval that is not ours
    assert "neither is computed" in capsys.readouterr().out


def _lecoqa_dir(tmp_path, answers: dict) -> Path:
    (tmp_path / "leco" / "evaluation").mkdir(parents=True)
    with open(tmp_path / "leco" / "evaluation" / "expected.jsonl", "w", encoding="utf-8") as f:
        for key, answer in answers.items():
            f.write(json.dumps({"id": key, "answer": answer}, ensure_ascii=False) + "\n")
    return tmp_path / "leco"


def test_scores_and_errors_without_the_dataset(tmp_path):
    expected = {"1": "您好，根据《民法典》第一千零四十七条，男不得早于二十二周岁。", "2": "可以要求支付经济补偿。"}
    leco = _lecoqa_dir(tmp_path, expected)
    same = score_answers(expected, dict(expected))
    assert same["BLEU"] == pytest.approx(1.0) and same["METEOR"] > 0.99 and same["n"] == 2
    assert score_answers(expected, {"1": "不知道。", "2": "不知道。"})["METEOR"] < same["METEOR"]
    with pytest.raises(DataError, match="1 missing"):
        score_answers(expected, {"1": "x"})
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "1", "answer": "x"}\n{"id": "2"}\n', encoding="utf-8")
    with pytest.raises(DataError, match="bad.jsonl:2: not a LeCoQA answer line"):
        read_answers(bad)
    with pytest.raises(DataError, match="needs --lecoqa_dir"):
        evaluate.main(["--benchmark", "lecoqa", "--score_predictions", str(bad), "--output_dir", str(tmp_path / "o")])
    with pytest.raises(evaluate.EvalError, match="not built yet"):
        evaluate.main(["--benchmark", "lecoqa", "--base_model", "m", "--lecoqa_dir", str(leco),
                       "--output_dir", str(tmp_path / "o")])
