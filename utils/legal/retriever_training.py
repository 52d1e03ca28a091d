"""Fitting the trained retriever (utils/legal/trained_retriever.py) and measuring it by k-fold cross-validation.

Hard negatives are our own retrieval's: every candidate of a training question (BM25's top 100 and the articles
its neighbours cited) that is not one of its gold articles. Leave-one-out memory and out-of-fold law routing keep a
training question from seeing its own answer in its features. The relevance threshold is the probability that
best separates gold from non-gold articles among the top 10 of held-out questions (F1, over the CV folds).
"""

from __future__ import annotations

import random

import numpy as np

from utils.legal.bm25 import BM25Index
from utils.legal.trained_retriever import (
    BM25_DEPTH,
    NEIGHBOURS,
    RANKER_C,
    ROUTER_C,
    Memory,
    MemoryQuestion,
    RetrieverError,
    TrainedRetriever,
    candidate_features,
)

KS = (1, 5, 10)
THRESHOLD_DEPTH = 10


def out_of_fold_router(memory: Memory, folds: int, seed: int = 0) -> np.ndarray:
    """P(law | question) for every memory question from a router fitted without its fold: (questions, laws), columns
    in ``memory.router.classes_`` order (a law absent from the other folds gets 0)."""
    from sklearn.linear_model import LogisticRegression

    laws = [a.law_name for a in memory.index.articles]
    n = len(memory.questions)
    order = list(range(n))
    random.Random(seed).shuffle(order)
    probs = np.zeros((n, len(memory.router.classes_)))
    for f in range(folds):
        held = set(order[f::folds])
        samples = [(i, law) for i, q in enumerate(memory.questions) if i not in held
                   for law in sorted({laws[r] for r in q.rows})]
        router = LogisticRegression(C=ROUTER_C, max_iter=3000)
        router.fit(memory.question_matrix[[i for i, _ in samples]], [law for _, law in samples])
        held_rows = sorted(held)
        part = router.predict_proba(memory.question_matrix[held_rows])
        columns = [memory.router_column[law] for law in router.classes_]
        probs[np.ix_(held_rows, columns)] = part
    return probs


def fit(questions: list[MemoryQuestion], index: BM25Index, folds: int = 5, threshold: float = 0.5,
        info: dict | None = None, progress=None) -> TrainedRetriever:
    """Fit the ranker's weights on ``questions`` (those with gold articles in the index) with hard negatives.

    ``progress``: called with 1 per question featurised (a tqdm's ``update``). Raises RetrieverError when fewer than
    10 questions have a gold article in the index."""
    from sklearn.linear_model import LogisticRegression

    usable = [q for q in questions if q.rows]
    if len(usable) < 10:
        raise RetrieverError(f"{len(usable)} training questions have a gold article in the statute store; at least 10 needed")
    memory = Memory(questions, index)
    router = out_of_fold_router(memory, max(2, folds))
    xs, ys = [], []
    for i, q in enumerate(questions):
        if q.rows:
            rows, features = candidate_features(q.question, memory, exclude=i, router_probs=router[i])
            xs.append(features)
            ys.append([r in q.rows for r in rows])
        if progress:
            progress(1)
    x, y = np.vstack(xs), np.concatenate(ys)
    if not y.any():
        raise RetrieverError("no training question has a gold article among its candidates")
    model = LogisticRegression(C=RANKER_C, max_iter=2000).fit(x, y)
    settings = {"bm25_depth": BM25_DEPTH, "neighbours": NEIGHBOURS, "ranker_c": RANKER_C, "router_c": ROUTER_C,
                "training_questions": len(questions), "with_gold_in_store": len(usable),
                "pairs": int(len(y)), "positives": int(y.sum())}
    return TrainedRetriever(memory, model.coef_[0].astype(float), float(model.intercept_[0]), threshold,
                            {**settings, **(info or {})})


def cross_validate(questions: list[MemoryQuestion], index: BM25Index, folds: int = 5, seed: int = 0,
                   progress=None) -> dict:
    """k-fold CV: each fold's questions ranked by a retriever fitted (and remembering) only the other folds.

    Returns hit@k (share of *all* held-out questions with a gold article in the top k: the issue's measure), the same
    for BM25 alone, recall@k over the gold articles in the index, and ``threshold``: the relevance probability with the
    best F1 between gold and non-gold articles in the held-out top 10 (with that F1, precision and recall)."""
    order = list(range(len(questions)))
    random.Random(seed).shuffle(order)
    hits = {name: dict.fromkeys(KS, 0) for name in ("trained", "bm25")}
    found, gold_total, scored = dict.fromkeys(KS, 0), 0, []
    row_of = {a.id: r for r, a in enumerate(index.articles)}
    for f in range(folds):
        held = set(order[f::folds])
        retriever = fit([q for i, q in enumerate(questions) if i not in held], index, folds)
        for i in sorted(held):
            q = questions[i]
            rows, probability = retriever.ranked(q.question)
            bm25_rows = [row_of[h.article.id] for h in index.search(q.question, max(KS))]
            for k in KS:
                hits["trained"][k] += bool(q.rows & set(rows[:k]))
                hits["bm25"][k] += bool(q.rows & set(bm25_rows[:k]))
                found[k] += len(q.rows & set(rows[:k]))
            gold_total += len(q.rows)
            scored += [(float(p), r in q.rows) for r, p in zip(rows[:THRESHOLD_DEPTH], probability)]
            if progress:
                progress(1)
    n = len(questions)
    return {"folds": folds, "questions": n,
            **{f"hit@{k}": hits["trained"][k] / n for k in KS}, **{f"bm25_hit@{k}": hits["bm25"][k] / n for k in KS},
            **{f"recall@{k}": found[k] / gold_total for k in KS}, **best_threshold(scored)}


def best_threshold(scored: list[tuple[float, bool]]) -> dict:
    """The probability threshold with the best F1 of 'gold' among (probability, is_gold) pairs, with its precision,
    recall and F1; ties go to the higher threshold."""
    best = {"threshold": 0.5, "f1": 0.0, "precision": 0.0, "recall": 0.0}
    positives = sum(g for _, g in scored)
    if not positives:
        return best
    kept = true = 0
    for p, g in sorted(scored, key=lambda pair: -pair[0]):
        kept, true = kept + 1, true + g
        precision, recall = true / kept, true / positives
        f1 = 2 * precision * recall / (precision + recall) if true else 0.0
        if f1 > best["f1"]:
            best = {"threshold": p, "f1": f1, "precision": precision, "recall": recall}
    return best
