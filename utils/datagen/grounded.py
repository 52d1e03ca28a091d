"""Grounded-answer instruction items: an everyday question, the articles the retriever returns for it, a short
answer that cites and quotes the right one — and ends. What a small model can learn to do well with ``--rag``.

Built from the statute store alone (no LLM), one item per article picked:

- the **question** is an everyday phrasing of the article's matter, from one of three sources (several phrasings
  each, see ``PHRASINGS``): the charge a 刑法 article defines (「盗窃罪会怎么判？」), the condition the article
  opens with (「…未与劳动者订立书面劳动合同的，应当…支付二倍的工资」→「如果…，会有什么后果？」; a condition
  without a sanction gets 「…的，法律上是怎么规定的？」), or
  the term it defines (「本法所称X，是指…」→「法律上说的X是什么意思？」);
- the **input** is exactly what ``--rag`` puts in the prompt for that question (utils/legal/rag.py ``prepare``: the trained
  retriever when models/retriever holds one, else BM25;
  ``top_k`` articles), so the gold article sits among realistic distractors, at the rank the retriever gives it;
- the **output** cites the gold article and quotes its opening sentence (「根据《刑法》第二百六十四条规定：“…”」,
  the form utils/legal/citations.py checks quotes in) and closes with one short sentence. When the retriever did not
  return the gold article, or for a share ``drop_gold`` of items where it is taken out on purpose, the output says
  that the retrieved articles do not settle the question — without citing them.

Train with the RAG template (``--prompt_template_name law_rag``) so the prompts match what ``--rag`` sends.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable

from utils.legal.bm25 import BM25Index
from utils.legal.rag import RagContext, default_index, format_articles, retrieve
from utils.legal.statutes import PRC, Article

PHRASINGS = {
    "charge": ["{x}会怎么判？", "犯了{x}要坐牢吗？", "如果被认定为{x}，会受到什么处罚？", "{x}在法律上是怎么规定的？",
               "朋友被指控{x}，法律上怎么处理？", "什么情况下构成{x}？"],
    "liability": ["如果{x}，会有什么后果？", "{x}，法律上怎么处理？", "{x}，要承担什么责任？",
                  "请问{x}的话，会受到什么处罚？"],
    "condition": ["{x}的，法律上是怎么规定的？", "如果{x}，应当怎么办？", "请问{x}的情况，法律有什么规定？",
                  "{x}，依法应该怎么处理？"],
    "term": ["法律上说的{x}是什么意思？", "什么是{x}？", "{x}指的是什么？"],
}
CLOSINGS = ["具体如何适用，还要结合案件的具体情况。", "以上是法条的规定，具体情况可以咨询律师。", ""]
NOT_SETTLED = ["检索到的这几条法条没有直接规定这个问题，仅凭它们无法作出判断。建议查阅相关法律的具体规定，或者咨询律师。",
               "给出的法条与这个问题不直接相关，不能据此回答。建议查找对应的法律规定，或者咨询专业律师。"]
_CONDITION = re.compile(r"^([^，。；：\n]{6,40}?(?:，[^，。；：\n]{2,20}?)?)的，")
_TERM = re.compile(r"(?:本法|本条|本章|本编)所称(?:的)?“?([^，。；：“”\n]{2,12}?)”?，?是指")
_LIABILITY = re.compile(r"处[^，。；]{0,12}(?:徒刑|拘役|罚款|罚金|管制)|赔偿|法律责任|处分|没收|吊销")
_SKIP_CONDITION = re.compile(r"下列|前款|前条|本法|本条|第[一二三四五六七八九十百]+条|依照|有关|其他|规定")
MAX_QUOTE = 150


def questions_for(article: Article) -> list[tuple[str, str]]:
    """(source, subject) pairs an everyday question can be asked about; empty when none fits the article."""
    out = []
    if article.law_name == PRC + "刑法" and article.charges and article.number >= 102:
        out += [("charge", c) for c in article.charges]
    first = article.text.split("\n")[0]
    m = _CONDITION.match(first)
    if m and not _SKIP_CONDITION.search(m.group(1)):
        out.append(("liability" if _LIABILITY.search(first[m.end():]) else "condition", m.group(1)))
    m = _TERM.search(article.text)
    if m:
        out.append(("term", m.group(1)))
    return out


def quote(article: Article, limit: int = MAX_QUOTE) -> str:
    """The article's opening: whole sentences (。) up to ``limit`` characters, else cut at a ；/，with ……."""
    text = article.text.split("\n")[0].strip()
    if len(text) <= limit:
        return text
    cut = max(text.rfind(mark, 0, limit) for mark in "。；")
    if cut >= 20:
        return text[: cut + 1] if text[cut] == "。" else text[:cut] + "……"
    cut = text.rfind("，", 0, limit)
    return text[: max(cut, 20)] + "……"


def answer(article: Article, rng: random.Random) -> str:
    charges = f"该条规定的罪名是{'、'.join(article.charges)}。" if article.charges else ""
    return f"根据{article.citation}规定：“{quote(article)}”{charges}{rng.choice(CLOSINGS)}"


def _key(article: Article) -> tuple:
    return (article.law_name, article.number, article.suffix)


def grounded_items(articles: Iterable[Article], rng: random.Random, limit: int, top_k: int = 3,
                   drop_gold: float = 0.1, index: BM25Index | None = None, held_out: set[tuple] = frozenset()) -> list[dict]:
    """Up to ``limit`` items (module docstring), from articles picked at random, with the articles --rag's retriever
    (``auto``: the trained one when models/retriever holds it, else BM25) finds for each question; ``held_out`` articles are never used
    as gold (the held-out questions' gold citations: the figures measure answers to questions never trained on)."""
    index = index or default_index()
    pool = [(a, q) for a in articles if _key(a) not in held_out for q in questions_for(a)]
    rng.shuffle(pool)
    items, used = [], set()
    for article, (source, subject) in pool:
        if len(items) >= limit:
            break
        if _key(article) in used:
            continue
        used.add(_key(article))
        question = rng.choice(PHRASINGS[source]).format(x=subject)
        hits = retrieve(question, top_k + 1, index=index)  # as --rag retrieves: the trained retriever when there is one
        gold_at = [i for i, h in enumerate(hits[:top_k]) if _key(h.article) == _key(article)]
        drop = bool(gold_at) and rng.random() < drop_gold
        if drop:
            hits = [h for h in hits if _key(h.article) != _key(article)]
        hits = hits[:top_k]
        settled = bool(gold_at) and not drop
        output = answer(article, rng) if settled else rng.choice(NOT_SETTLED)
        context = RagContext(question, question, format_articles(hits), hits)
        items.append({"instruction": context.instruction, "input": context.input, "output": output,
                      "kind": "grounded_answer", "source": article.citation if settled else "not_settled",
                      "_key": _key(article), "_context": [_key(h.article) for h in hits]})
    return items


EARLIER_MAX_CHARS = 240  # an earlier turn's answer at most this long: the whole item stays within the demo's cutoff
SAME_MATTER = 1 / 3  # share of the earlier turns on the same article (where another kind of item has it)


def add_earlier_turns(items: list[dict], share: float, rng: random.Random,
                      same_matter: float = SAME_MATTER) -> dict[str, int]:
    """Put ``share`` of the grounded answers into a conversation: ``history`` gets one earlier question and answer
    of another item, so a model learns to answer the question asked now, from the articles retrieved for it, and
    not to repeat its last answer — the demo model, trained on single turns only, answered an unrelated second
    question with its first answer word for word (issue 28).

    The earlier turn is, for ``same_matter`` of them, an item about the same article (its text recited, its charge
    defined: a follow-up on the same matter) where one exists, else an item on another article (a change of
    subject), half of those another grounded answer — the answer a parrot would repeat. Earlier answers are at most
    ``EARLIER_MAX_CHARS`` long, and the earlier turn is its question alone (no articles, as the web UI's and the API's
    history carries none; never an article_charge item, whose question is about the article in its input). Returns ``{"same_matter": n, "other_matter": n}``; ``items`` is changed in place."""
    # article_charge items ask about the article in their input: without it the question means nothing
    short = [j for j, item in enumerate(items)
             if len(item["output"]) <= EARLIER_MAX_CHARS and item["kind"] != "article_charge"]
    by_key: dict[tuple, list[int]] = {}
    for j in short:
        if items[j].get("_key") is not None:
            by_key.setdefault(items[j]["_key"], []).append(j)
    grounded_short = [j for j in short if items[j]["kind"] == "grounded_answer"]
    counts = {"same_matter": 0, "other_matter": 0}
    for i, item in enumerate(items):
        if item["kind"] != "grounded_answer" or rng.random() >= share:
            continue
        key = item.get("_key")
        same = [j for j in by_key.get(key, ()) if j != i] if key is not None else []
        if same and rng.random() < same_matter:
            pool, kind = same, "same_matter"
        else:
            pool = grounded_short if grounded_short and rng.random() < 0.5 else short
            pool, kind = [j for j in pool if j != i and (key is None or items[j].get("_key") != key)], "other_matter"
        pool = [j for j in pool if items[j]["output"] != item["output"]]  # two "not settled" answers: no lesson
        if not pool:
            continue
        earlier = items[rng.choice(pool)]
        item["history"] = [[earlier["instruction"], earlier["output"]]]
        counts[kind] += 1
    return counts
