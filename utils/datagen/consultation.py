"""Consultation-answer items: real layperson questions (LeCoQA's train split, shipped in resources/lecoqa/), the
articles ``--rag`` retrieves for each, and an answer that says the matter in plain words first, then cites and quotes
the article that settles it — or says the retrieved articles do not (issue 31, item 2).

- the **question** is the layperson's own wording (「房东不退押金怎么办？」), which the templated grounded questions
  (utils/datagen/grounded.py) never have;
- the **input** is what ``--rag`` retrieves for it: the trained retriever's top ``top_k`` with the question itself left
  out of the retriever's memory (served, a new question is never in it), or BM25's without a trained retriever. So
  the gold article sits among the distractors real retrieval gives, often not first;
- the **output** starts with the lawyer's first sentence (「您好，」 dropped; left out when it names an article itself,
  which the model must only cite from its input) and then 「根据《…》第N条规定：“…”」 for the best-ranked gold article
  among the given ones. When no gold article was retrieved, or for ``drop_gold`` of the items where it is taken out on
  purpose, the output says the retrieved articles do not settle the question.

LeCoQA's test split is never used (its questions are the benchmark); a gold article of the held-out everyday question
sets is never cited (``held_out``), as for the grounded items.
"""

from __future__ import annotations

import random
import re

from utils.datagen.grounded import NOT_SETTLED, quote
from utils.legal.bm25 import BM25Index
from utils.legal.rag import default_index, format_articles, resolve_retriever, trained_retriever
from utils.legal.statutes import Article, StatuteStore

PLAIN_MAX_CHARS = 100
_GREETING = re.compile(r"^\s*(?:您好|你好)[，,！!。\s]*")
_CITES = re.compile(r"《|第[一二三四五六七八九十百千零\d]+条|法律规定|规定[:：]")


def plain_words(lawyer_answer: str) -> str:
    """The lawyer's first sentence(s), at most ``PLAIN_MAX_CHARS`` characters ending at 。; '' when it cites or names a
    law (the model must cite only what it was given) or no sentence fits."""
    text = _GREETING.sub("", lawyer_answer.strip().split("\n")[0])
    end = text.rfind("。", 0, PLAIN_MAX_CHARS + 1)
    sentence = text[: end + 1] if end >= 8 else ""
    return "" if not sentence or _CITES.search(sentence) else sentence


def consultation_items(questions: list[dict], store: StatuteStore, rng: random.Random, limit: int, top_k: int = 3,
                       drop_gold: float = 0.1, index: BM25Index | None = None,
                       held_out: set[tuple] = frozenset()) -> list[dict]:
    """Up to ``limit`` items (module docstring) from ``questions`` ({question, answer, gold: [article names]}, as
    utils/lecoqa/questions.read_question_file returns them), picked at random."""
    from utils.lecoqa.questions import gold_articles

    index = index or default_index()
    ranker = trained_retriever(index) if resolve_retriever("auto") == "trained" else None
    order = list(range(len(questions)))
    rng.shuffle(order)
    items = []
    for i in order:
        if len(items) >= limit:
            break
        q = questions[i]
        gold, _ = gold_articles(q["gold"], store)
        if not gold or gold & held_out:
            continue
        hits = ranker.search(q["question"], top_k + 1, leave_out_self=True) if ranker else \
            index.search(q["question"], top_k + 1)
        if any(_key(h.article) in gold for h in hits[:top_k]) and rng.random() < drop_gold:
            hits = [h for h in hits if _key(h.article) not in gold]
        hits = hits[:top_k]
        given = [h for h in hits if _key(h.article) in gold]
        output = rng.choice(NOT_SETTLED) if not given else _answer(given[0].article, plain_words(q.get("answer") or ""))
        items.append({"instruction": q["question"], "input": format_articles(hits), "output": output,
                      "kind": "consultation_answer", "source": given[0].article.citation if given else "not_settled",
                      "_key": _key(given[0].article) if given else None, "_context": [_key(h.article) for h in hits]})
    return items


def _key(article: Article) -> tuple:
    return (article.law_name, article.number, article.suffix)


def _answer(article: Article, plain: str) -> str:
    return f"{plain}根据{article.citation}规定：“{quote(article)}”"
