"""The trained retriever (utils/legal/trained_retriever.py, tools/train_retriever.py) and --rag's choice of retriever."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "resources" / "lecoqa" / "train.jsonl.xz"
FIT_QUESTIONS, HELD_OUT = 300, slice(300, 500)


@pytest.fixture(scope="module")
def index():
    from utils.legal.bm25 import BM25Index

    return BM25Index.load()


@pytest.fixture(scope="module")
def shipped_questions():
    from utils.lecoqa.questions import read_question_file

    return read_question_file(SHIPPED)


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory, shipped_questions):
    """The tool's output, trained on the first 300 shipped LeCoQA train questions (~10 s)."""
    questions = tmp_path_factory.mktemp("questions") / "q.jsonl"
    questions.write_text("".join(json.dumps(q, ensure_ascii=False) + "\n" for q in shipped_questions[:FIT_QUESTIONS]),
                         encoding="utf-8")
    out = tmp_path_factory.mktemp("retriever")
    run = subprocess.run([sys.executable, "tools/train_retriever.py", "--questions", str(questions), "--output_dir",
                          str(out)], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return out


def gold_rows(question, index):
    from utils.lecoqa.questions import gold_articles

    inside, _ = gold_articles(question["gold"], index.store)
    return inside


def test_shipped_questions_are_lecoqa_train(shipped_questions):
    assert len(shipped_questions) == 1234
    assert all(q["question"] and q["gold"] for q in shipped_questions)


def test_tool_writes_a_loadable_retriever_with_provenance(trained_dir, index):
    from utils.legal.trained_retriever import FEATURES, TrainedRetriever

    info = json.loads((trained_dir / "run_info.json").read_text(encoding="utf-8"))
    assert info["training_questions"] == FIT_QUESTIONS and info["positives"] > 0 and info["pairs"] > info["positives"]
    retriever = TrainedRetriever.load(trained_dir, index)
    assert len(retriever.weights) == len(FEATURES)
    hits = retriever.search("公司拖欠工资不发怎么办", 5)
    assert [h.rank for h in hits] == [1, 2, 3, 4, 5]
    assert all(0 < h.score < 1 for h in hits) and [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_trained_beats_bm25_on_questions_it_never_saw(trained_dir, index, shipped_questions):
    """Questions 300–499 of LeCoQA train were not in the memory nor the fit: a gold article in the top 5 more often
    than BM25 (5-fold CV on all 1,234: 0.647 vs 0.515)."""
    from utils.legal.trained_retriever import TrainedRetriever

    retriever = TrainedRetriever.load(trained_dir, index)
    trained = bm25 = 0
    for q in shipped_questions[HELD_OUT]:
        gold = gold_rows(q, index)
        key = lambda h: (h.article.law_name, h.article.number, h.article.suffix)  # noqa: E731
        trained += bool(gold & {key(h) for h in retriever.search(q["question"], 5)})
        bm25 += bool(gold & {key(h) for h in index.search(q["question"], 5)})
    assert trained >= bm25 + 10, (trained, bm25)


def test_memory_question_finds_its_own_articles(trained_dir, index, shipped_questions):
    from utils.legal.trained_retriever import TrainedRetriever

    retriever = TrainedRetriever.load(trained_dir, index)
    found = 0
    for q in shipped_questions[:50]:
        top = {(h.article.law_name, h.article.number, h.article.suffix) for h in retriever.search(q["question"], 5)}
        found += bool(gold_rows(q, index) & top)
    assert found >= 40


def test_save_load_round_trip_ranks_the_same(trained_dir, index, tmp_path):
    from utils.legal.trained_retriever import TrainedRetriever

    first = TrainedRetriever.load(trained_dir, index)
    first.save(tmp_path)
    again = TrainedRetriever.load(tmp_path, index)
    for question in ("房东不退押金怎么办", "醉酒驾驶机动车会判刑吗"):
        rows, probability = first.ranked(question)
        rows2, probability2 = again.ranked(question)
        assert rows == rows2 and np.allclose(probability, probability2)


def test_load_errors_name_the_directory(trained_dir, index, tmp_path):
    from utils.legal.trained_retriever import RetrieverError, TrainedRetriever

    with pytest.raises(RetrieverError, match=f"{tmp_path}: no trained retriever there .*train_retriever.py"):
        TrainedRetriever.load(tmp_path, index)
    for name in ("ranker.json", "questions.jsonl", "memory.npz"):
        (tmp_path / name).write_bytes((trained_dir / name).read_bytes())
    ranker = json.loads((tmp_path / "ranker.json").read_text(encoding="utf-8"))
    (tmp_path / "ranker.json").write_text(json.dumps({**ranker, "version": 0}), encoding="utf-8")
    with pytest.raises(RetrieverError, match="another version"):
        TrainedRetriever.load(tmp_path, index)


def test_leave_one_out_features_hide_a_question_from_itself(trained_dir, index):
    """While fitting, a training question must not see its own gold articles through the memory."""
    from utils.legal.trained_retriever import FEATURES, TrainedRetriever, candidate_features

    retriever = TrainedRetriever.load(trained_dir, index)
    memory = retriever.memory
    i = next(i for i, q in enumerate(memory.questions) if q.rows)
    q = memory.questions[i]
    cited = FEATURES.index("neighbours_cited")
    rows, seen = candidate_features(q.question, memory)
    rows_loo, hidden = candidate_features(q.question, memory, exclude=i)
    gold = next(iter(q.rows))
    assert seen[rows.index(gold), cited] >= 0.99  # itself, similarity 1
    assert gold not in rows_loo or hidden[rows_loo.index(gold), cited] < seen[rows.index(gold), cited] - 0.5


def test_auto_uses_the_trained_retriever_when_present(trained_dir, monkeypatch, capsys):
    from utils.legal import rag

    monkeypatch.setenv("LAWGPT_RETRIEVER_DIR", str(trained_dir))
    assert rag.check_retriever("auto") == "trained"
    assert "BM25" not in capsys.readouterr().err
    hits = rag.retrieve("老板不发工资怎么办", 3)
    assert hits == rag.trained_retriever().search("老板不发工资怎么办", 3)


def test_auto_falls_back_to_bm25_with_a_notice(tmp_path, monkeypatch, capsys):
    from utils.common.errors import ConfigError
    from utils.legal import rag

    monkeypatch.setenv("LAWGPT_RETRIEVER_DIR", str(tmp_path / "none"))
    assert rag.check_retriever("auto") == "bm25"
    assert "no trained retriever in" in capsys.readouterr().err
    assert rag.retrieve("盗窃罪怎么判", 3) == rag.default_index().search("盗窃罪怎么判", 3)
    with pytest.raises(ConfigError, match="--rag_retriever trained: .*no trained retriever there"):
        rag.check_retriever("trained")


def test_tool_rejects_bad_input(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "问", "gold": ["《民法典》第一条"]}\n{"question": "", "gold": []}\n', encoding="utf-8")
    run = subprocess.run([sys.executable, "tools/train_retriever.py", "--questions", str(bad), "--output_dir",
                          str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 1 and f"{bad}:2: 'question' must be a non-empty string" in run.stderr
    run = subprocess.run([sys.executable, "tools/train_retriever.py", "--cv_folds", "1"], cwd=ROOT,
                         capture_output=True, text=True)
    assert run.returncode == 1 and "--cv_folds 1" in run.stderr
    assert not (tmp_path / "out").exists()


def test_best_threshold_maximises_f1():
    from utils.legal.retriever_training import best_threshold

    scored = [(0.9, True), (0.8, True), (0.7, False), (0.4, True), (0.1, False), (0.05, False)]
    best = best_threshold(scored)
    assert best["threshold"] == 0.4 and best["recall"] == 1.0 and best["precision"] == 0.75
    assert best_threshold([(0.5, False)])["f1"] == 0.0


@pytest.mark.parametrize("with_trained", [True, False])
def test_relevant_verdict_fails_an_off_topic_real_article(with_trained, trained_dir, tmp_path, monkeypatch):
    """A real, in-force article quoted word for word still gets no green tick when it does not answer the question."""
    from utils.inference.webui_app import MARK_NOT_RELEVANT, render_sources
    from utils.legal import rag

    monkeypatch.setenv("LAWGPT_RETRIEVER_DIR", str(trained_dir if with_trained else tmp_path / "none"))
    question = "危险驾驶罪怎么判？"
    store = rag.default_index().store
    divorce, drunk = store.lookup("民法典", 1079), store.lookup("刑法", 133, 1)
    context = rag.prepare(question, 3)
    assert context.retriever == ("trained" if with_trained else "bm25")
    on_topic = rag.finalize(f"根据《刑法》第一百三十三条之一规定：“{drunk.text[:40]}”", context)["citations"]
    off_topic = rag.finalize(f"根据《民法典》第一千零七十九条规定：“{divorce.text[:40]}”", context)["citations"]
    assert on_topic[0]["status"] == off_topic[0]["status"] == "verified"
    assert on_topic[0]["quote_matches"] and off_topic[0]["quote_matches"]
    assert on_topic[0]["relevant"] is True and on_topic[0]["confirmed"] is True
    assert off_topic[0]["relevant"] is False and off_topic[0]["confirmed"] is False
    if with_trained:
        assert off_topic[0]["relevance"] < on_topic[0]["relevance"]
    assert MARK_NOT_RELEVANT in render_sources([], off_topic) and "✅" not in render_sources([], off_topic)
    assert "✅" in render_sources([], on_topic)


def test_without_a_question_a_citation_is_not_confirmed():
    from utils.inference.webui_app import MARK_UNJUDGED, render_sources
    from utils.legal import rag

    record = rag.finalize("根据《刑法》第二百六十四条规定，盗窃公私财物……", None, rag.default_index().store)
    assert record["citations"][0]["relevant"] is None and record["citations"][0]["confirmed"] is False
    assert record["citation_summary"]["confirmed"] == 0 and record["citation_summary"]["verified"] == 1
    assert MARK_UNJUDGED in render_sources([], record["citations"])


def test_consultation_items_cite_only_a_given_gold_article(trained_dir, index, shipped_questions, monkeypatch):
    import random

    from utils.datagen.consultation import consultation_items
    from utils.datagen.grounded import NOT_SETTLED
    from utils.legal.citations import check_citations

    monkeypatch.setenv("LAWGPT_RETRIEVER_DIR", str(trained_dir))
    held_out = {("中华人民共和国劳动合同法", 7, 0)}
    items = consultation_items(shipped_questions[:FIT_QUESTIONS], index.store, random.Random(0), 60, held_out=held_out)
    assert len(items) == 60
    settled = [i for i in items if i["source"] != "not_settled"]
    assert 15 <= len(settled) < 60  # some gold articles are not retrieved: those say so
    for item in items:
        assert item["kind"] == "consultation_answer" and item["input"].startswith("[1] ")
        assert item["_key"] != ("中华人民共和国劳动合同法", 7, 0)
        cited = [(v.law_name, v.number, v.suffix) for v in check_citations(item["output"], index.store) if v.number]
        if item["source"] == "not_settled":
            assert item["output"] in NOT_SETTLED and not cited
        else:
            # the answer cites the gold article first; any later citation is inside its quote (「依照本法第…条」)
            assert cited[0] == item["_key"] and item["_key"] in item["_context"]
            assert all(item["output"].index("“") < item["output"].find(article_label) for article_label in
                       [v.text for v in check_citations(item["output"], index.store)[1:]])
            assert item["output"].count("“") == 1 and "您好" not in item["output"]


def test_a_memory_question_is_ranked_as_new_for_training_data(trained_dir, index, shipped_questions):
    from utils.legal.trained_retriever import TrainedRetriever

    retriever = TrainedRetriever.load(trained_dir, index)
    q = shipped_questions[0]["question"]
    assert retriever.memory.position(q) == 0 and retriever.memory.position("从未见过的问题") is None
    seen, _ = retriever.ranked(q)
    new, _ = retriever.ranked(q, leave_out_self=True)
    gold = retriever.memory.questions[0].rows
    first = lambda rows: min((rows.index(r) for r in gold if r in rows), default=len(rows))  # noqa: E731
    assert first(seen) == 0 and first(new) >= first(seen)


def test_plain_words_take_the_lawyers_first_sentence_without_citations():
    from utils.datagen.consultation import plain_words

    assert plain_words("您好，有经营能力的公民经过登记可以成为个体工商户。外国公民不可以。") == "有经营能力的公民经过登记可以成为个体工商户。外国公民不可以。"
    long = "有经营能力的公民经过登记可以成为个体工商户。" + "外国公民不可以" * 20 + "。"
    assert plain_words(long) == "有经营能力的公民经过登记可以成为个体工商户。"  # whole sentences within 100 characters
    assert plain_words("根据《民法典》第五十四条，可以登记。") == ""
    assert plain_words("这个问题需要看具体情况" * 20) == ""


@pytest.mark.parametrize("retriever", ["trained", "bm25"])
def test_an_article_the_question_cites_comes_first(retriever, trained_dir, monkeypatch):
    """LawBench 1-1 asks 「…第三十三条的内容是什么？」: no ranking put that article in its top 3, the lookup does."""
    from utils.legal import rag

    monkeypatch.setenv("LAWGPT_RETRIEVER_DIR", str(trained_dir))
    hits = rag.retrieve("民法商法农民专业合作社法第三十三条的内容是什么？", 3, retriever)
    assert hits[0].article.citation == "《农民专业合作社法》第三十三条" and [h.rank for h in hits] == [1, 2, 3]
    both = rag.retrieve("依照《刑法》第二百六十四条和第二百六十七条处罚", 3, retriever)
    assert [h.article.citation for h in both[:2]] == ["《刑法》第二百六十四条", "《刑法》第二百六十七条"]
    plain = rag.retrieve("入户盗窃怎么判", 3, retriever)  # no citation: the retriever's own ranking
    assert plain == (rag.trained_retriever() if retriever == "trained" else rag.default_index()).search("入户盗窃怎么判", 3)


def test_a_named_law_overrides_the_law_router(trained_dir, index):
    """The router knows only its training laws: it sent 「农民专业合作社法关于理事长…」 to 民法典 before."""
    from utils.legal.trained_retriever import TrainedRetriever

    retriever = TrainedRetriever.load(trained_dir, index)
    hits = retriever.search("农民专业合作社法关于理事长是怎么规定的？", 3)
    assert all(h.article.law_name == "中华人民共和国农民专业合作社法" for h in hits)
