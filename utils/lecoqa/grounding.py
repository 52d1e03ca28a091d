"""How grounded a set of LeCoQA answers is, beside LeCoQA's own metrics: do the answers cite law, is it real, is it the
law the lawyers named (the gold articles), and could retrieval have found it.

Every citation is read and checked by utils/legal/citations.py against the statute store, which holds laws, judicial
interpretations and State Council regulations (issue 30). A citation of a document the store does not hold
(``not_in_store``: named as interpretations and regulations are, e.g. a local regulation) or of a law it does not know
(``unknown_law``) is counted as "outside the store", neither verified nor wrong. A gold article counts only when it is
in the store; how many are is reported beside every figure.
"""

from __future__ import annotations

from utils.lecoqa.questions import gold_articles


def grounding(questions: list[dict], answers: dict[str, str], store) -> dict:
    """Figures over ``questions`` (see :func:`utils.lecoqa.questions.load_questions`) for ``answers`` (id → text):

    ``cite_share``: answers citing at least one article; ``verified_share``: of the article citations of laws in the
    store, those whose article exists and is in force (existence only); ``confirmed_share``: of the same, those also
    quoted faithfully (if quoted) and fitting the question (utils/legal/citations.Verdict.confirmed); ``outside_store``: article citations of laws the store
    lacks; ``cite_gold_share``: of the questions with a gold article in the store, those whose answer cites one;
    ``gold_in_store`` / ``gold_total``: gold articles in the store / all, ``questions_with_gold``."""
    from utils.legal.citations import check_citations
    from utils.legal.rag import judge_relevance

    citing = cited_gold = with_gold = gold_in = gold_total = in_store = verified = outside = confirmed = 0
    for q in questions:
        inside, outside_names = gold_articles(q["gold"], store)
        gold_in, gold_total = gold_in + len(inside), gold_total + len(inside) + len(outside_names)
        verdicts = [v for v in check_citations(answers[q["id"]], store) if v.number is not None]
        judge_relevance(verdicts, q["question"])  # the retriever --rag uses now (auto) judges the fit
        citing += bool(verdicts)
        for v in verdicts:
            if v.status in ("unknown_law", "not_in_store"):
                outside += 1
            else:
                in_store += 1
                verified += v.status == "verified"
                confirmed += v.confirmed
        if inside:
            with_gold += 1
            cited_gold += any((v.law_name, v.number, v.suffix) in inside for v in verdicts if v.status == "verified")
    n = len(questions)
    return {"answers": n, "cite_share": citing / n if n else 0.0,
            "verified_share": verified / in_store if in_store else None, "citations_in_store": in_store,
            "confirmed_share": confirmed / in_store if in_store else None,
            "outside_store": outside, "cite_gold_share": cited_gold / with_gold if with_gold else None,
            "questions_with_gold": with_gold, "gold_in_store": gold_in, "gold_total": gold_total}


def retrieval_recall(questions: list[dict], store, retrieve, ks: tuple[int, ...] = (1, 5, 10)) -> dict:
    """Recall@k of the gold articles: the share of them among the top k articles that ``retrieve(question, k)``
    returns (hits with ``.article``), for each k — ``recall@k`` over the gold articles in the store
    (``gold_in_store`` of them), ``recall_all@k`` over all (``gold_total``: those outside the store count as
    missed)."""
    found, total, everything = dict.fromkeys(ks, 0), 0, 0
    for q in questions:
        inside, outside = gold_articles(q["gold"], store)
        everything += len(inside) + len(outside)
        if not inside:
            continue
        total += len(inside)
        ranked = [(h.article.law_name, h.article.number, h.article.suffix) for h in retrieve(q["question"], max(ks))]
        for k in ks:
            found[k] += len(inside & set(ranked[:k]))
    return {**{f"recall@{k}": found[k] / total if total else None for k in ks},
            **{f"recall_all@{k}": found[k] / everything if everything else None for k in ks},
            "gold_in_store": total, "gold_total": everything}
