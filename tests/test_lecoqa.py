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
    assert "BERTScore not computed (give --bertscore_model" in capsys.readouterr().out


def _lecoqa_dir(tmp_path, answers: dict) -> Path:
    """A LeCoQA checkout in miniature: the test questions and their answers file."""
    (tmp_path / "leco" / "evaluation").mkdir(parents=True)
    (tmp_path / "leco" / "data" / "example").mkdir(parents=True)
    with open(tmp_path / "leco" / "evaluation" / "expected.jsonl", "w", encoding="utf-8") as f:
        for key, answer in answers.items():
            f.write(json.dumps({"id": key, "answer": answer}, ensure_ascii=False) + "\n")
    questions = [{"问题": f"问题{key}：男21岁女20岁能结婚吗？", "答案文本": answer, "query_id": int(key),
                  "match_name": ["中华人民共和国民法典第一千零四十七条", "最高人民法院关于审理民间借贷案件适用法律若干问题的规定第二十五条"]}
                 for key, answer in answers.items()]
    (tmp_path / "leco" / "data" / "example" / "test.json").write_text(json.dumps(questions, ensure_ascii=False),
                                                                       encoding="utf-8")
    return tmp_path / "leco"


def test_scores_and_errors_without_the_dataset(tmp_path):
    expected = {"1": "您好，根据《民法典》第一千零四十七条，男不得早于二十二周岁。", "2": "可以要求支付经济补偿。"}
    leco = _lecoqa_dir(tmp_path, expected)
    assert evaluate.main(["--benchmark", "lecoqa", "--score_predictions", str(leco / "evaluation" / "expected.jsonl"),
                          "--lecoqa_dir", str(leco), "--output_dir", str(tmp_path / "self")])["BLEU"] == pytest.approx(1)
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


def test_grounding_counts_gold_articles_in_the_store_only():
    from utils.lecoqa.grounding import grounding
    from utils.lecoqa.questions import gold_articles
    from utils.legal.statutes import StatuteStore

    store = StatuteStore.load()
    guarantee = "最高人民法院关于适用《中华人民共和国民法典》有关担保制度的解释第二十五条"
    unheld = "最高人民法院关于审理某某纠纷案件适用法律若干问题的解释第二十五条"  # no such document in the store
    gold = ["中华人民共和国民法典第一千零四十七条", guarantee, unheld]
    inside, outside = gold_articles(gold, store)
    # the interpretation's article 25 is its own (issue 30: the store holds it), not the Civil Code's article 25
    assert (store.resolve_law(guarantee.removesuffix("第二十五条")).name, 25, 0) in inside and outside == [unheld]
    assert ("中华人民共和国民法典", 25, 0) not in inside and len(inside) == 2
    # LeCoQA writes the law inside the title short (《民法典》): the same interpretation
    short_inside, _ = gold_articles(["最高人民法院关于适用《民法典》有关担保制度的解释第十三条"], store)
    assert short_inside == {(store.resolve_law(guarantee.removesuffix("第二十五条")).name, 13, 0)}
    questions = [{"id": "1", "question": "男女法定结婚年龄是多少？", "gold": gold[:2]}, {"id": "2", "question": "担保", "gold": [unheld]}]
    figures = grounding(questions, {"1": "依据《民法典》第一千零四十七条，男不得早于二十二周岁。",
                                    "2": "依据《最高人民法院关于审理某某纠纷案件适用法律若干问题的解释》第二十五条。"}, store)
    assert figures["cite_gold_share"] == 1.0 and figures["questions_with_gold"] == 1
    assert figures["gold_in_store"] == 2 and figures["gold_total"] == 3 and figures["cite_share"] == 1.0
    assert figures["outside_store"] == 1 and figures["verified_share"] == 1.0  # not in the store is not "wrong"
    assert figures["confirmed_share"] == 1.0  # the article answers the question (BM25 ranks it in its top 5)


def test_a_model_answers_resumably_and_is_scored(tiny_model_dir, tmp_path):
    leco = _lecoqa_dir(tmp_path, {"7": "您好，可以。", "8": "不可以。", "9": "视情况而定。"})
    out = tmp_path / "run"
    argv = ["--benchmark", "lecoqa", "--base_model", str(tiny_model_dir), "--lecoqa_dir", str(leco), "--limit", "2",
            "--max_new_tokens", "4", "--batch_size", "2", "--output_dir", str(out)]
    data = evaluate.main(argv)
    assert data["n"] == 2 and 0 <= data["METEOR"] <= 1 and data["grounding"]["questions_with_gold"] == 2
    answers = [json.loads(line) for line in (out / "answers.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [a["id"] for a in answers] == ["7", "8"] and all(isinstance(a["answer"], str) for a in answers)
    again = evaluate.main(argv)  # resumes: nothing left to generate, the same scores
    assert again["METEOR"] == data["METEOR"] and len((out / "predictions.jsonl").read_text().splitlines()) == 2
    with pytest.raises(evaluate.EvalError, match="different max_new_tokens"):
        evaluate.main([*argv[:-4], "--max_new_tokens", "5", "--output_dir", str(out)])


def test_retrieval_recall_counts_gold_articles_in_the_store():
    from types import SimpleNamespace

    from utils.lecoqa.grounding import retrieval_recall
    from utils.legal.statutes import StatuteStore

    store = StatuteStore.load()
    article = store.lookup("中华人民共和国民法典", 1047)
    other = store.lookup("中华人民共和国民法典", 1046)
    questions = [{"id": "1", "question": "结婚年龄", "gold": ["中华人民共和国民法典第一千零四十七条"]},
                 {"id": "2", "question": "担保", "gold": ["最高人民法院关于审理某某纠纷案件适用法律若干问题的解释第二十五条"]}]

    def retrieve(question, k):  # the gold article second
        return [SimpleNamespace(article=a) for a in (other, article)][:k]

    assert retrieval_recall(questions, store, retrieve, ks=(1, 2)) == {
        "recall@1": 0.0, "recall@2": 1.0, "recall_all@1": 0.0, "recall_all@2": 0.5, "gold_in_store": 1, "gold_total": 2}
