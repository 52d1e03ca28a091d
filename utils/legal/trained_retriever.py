"""A statute retriever trained on real layperson questions: BM25 candidates re-ranked by a learned scorer.

BM25 (utils/legal/bm25.py) matches words; a layperson's 「房东不退押金怎么办」 shares few of them with the article that
answers it. What closes much of that gap is *memory*: questions people asked before, each with the articles a
lawyer cited (LeCoQA's training split, shipped as ``resources/lecoqa/train.jsonl.xz``). For a new question:

1. **candidates** — BM25's top ``BM25_DEPTH`` articles, plus every article cited by the ``NEIGHBOURS`` training
   questions most like it (TF-IDF cosine over jieba words and character bigrams, on the question alone and on
   question + lawyer's answer);
2. **features** per candidate (``FEATURES``): its BM25 score and rank, how strongly similar questions cited it or its
   law, how often it and its law were cited at all, the probability of its law given the question (a logistic
   regression over the training questions: law routing; a law the question names gets all of it — the router knows
   only its training laws and sent 「农民专业合作社法关于理事长是怎么规定的？」 to 民法典), whether the question names its
   law, its document type;
3. **score** — a logistic regression over these features, fitted on the training questions with hard negatives
   (the other candidates our own retrieval produces for them). A training question's features are computed
   without itself (leave-one-out memory, out-of-fold law routing), so the weights learn how much a *new*
   question's neighbours are worth.

The ranker's probability also says whether an article fits a question at all (``relevance``): the citation
checker's *relevant* verdict uses it with a threshold chosen on the training questions.

Saved as a directory (``save``/``load``, JSON only, no pickle): ``ranker.json`` (feature names, weights, settings,
threshold) and ``questions.jsonl`` (the memory: question, answer, gold articles as [law, number, suffix]) and ``memory.npz`` (the
TF-IDF vocabularies and vectors, the law router's weights: numpy arrays, loaded with ``allow_pickle=False``). Figures and
how the settings were chosen (5-fold cross-validation on LeCoQA train): benchmarks/RESULTS.md, "Trained retriever".
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from utils.common.errors import LawgptError
from utils.common.paths import REPO_ROOT
from utils.legal.bm25 import BM25Index, Hit, tokenize, top_rows
from utils.legal.statutes import LAW_TYPES

RANKER_VERSION = 2  # 2: a named law overrides the router (features of version 1 differ)
DEFAULT_DIR = REPO_ROOT / "models" / "retriever"  # where the demo trains it and --rag looks for it
BM25_DEPTH, NEIGHBOURS = 100, 20  # 5-fold CV on LeCoQA train: depth 200 and C 0.1–10 within ±0.005 of recall
ROUTER_C, RANKER_C = 10.0, 1.0
FEATURES = ("bm25_relative", "bm25_reciprocal_rank", "bm25_log_rank", "neighbours_cited", "neighbour_best",
            "neighbours_cited_law", "log_times_cited", "log_times_law_cited", "law_named", "is_law",
            "from_neighbours", "from_bm25", "log_p_law", "neighbours_cited_with_answers")


class RetrieverError(LawgptError, ValueError):
    """A trained retriever directory that is missing, incomplete or from another version."""


def analyzer(text: str) -> list[str]:
    """TF-IDF terms of a question: jieba words (with the statute words of its everyday words) + character bigrams."""
    chars = [c for c in text if "\u4e00" <= c <= "\u9fff"]
    return tokenize(f"{text} {BM25Index.expansion(text)}") + [a + b for a, b in zip(chars, chars[1:])]


def _vectorizer():
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(analyzer=analyzer, sublinear_tf=True)


def _restored_vectorizer(terms: np.ndarray, idf: np.ndarray):
    vectorizer = _vectorizer()
    vectorizer.vocabulary = {term: i for i, term in enumerate(terms.tolist())}
    vectorizer.idf_ = idf  # sklearn's setter: the fitted transformer of that vocabulary
    return vectorizer


def _csr(saved: dict, name: str):
    from scipy.sparse import csr_matrix

    return csr_matrix((saved[f"{name}_data"], saved[f"{name}_indices"], saved[f"{name}_indptr"]),
                      shape=tuple(saved[f"{name}_shape"].tolist()))


@dataclass
class MemoryQuestion:
    """A training question: its text, the lawyer's answer ('' if none) and the rows of its gold articles."""

    question: str
    answer: str
    rows: frozenset


class Memory:
    """Training questions as TF-IDF vectors (question alone; question + answer), citation counts, and the law router
    (P(law | question), a logistic regression over the question vectors). ``saved``: the arrays of :meth:`arrays`
    (from ``memory.npz``), which skips the fitting (~13 s on 2 cores) and gives the same vectors and router."""

    def __init__(self, questions: list[MemoryQuestion], index: BM25Index, saved: dict | None = None):
        from sklearn.linear_model import LogisticRegression

        self.questions, self.index = questions, index
        self._positions = {q.question: i for i, q in enumerate(questions)}
        laws = [a.law_name for a in index.articles]
        self.times_cited = Counter(r for q in questions for r in q.rows)
        self.times_law_cited = Counter(laws[r] for q in questions for r in q.rows)
        if saved is not None:
            self.by_question = _restored_vectorizer(saved["question_terms"], saved["question_idf"])
            self.by_answer = _restored_vectorizer(saved["answer_terms"], saved["answer_idf"])
            self.question_matrix = _csr(saved, "question_matrix")
            self.answer_matrix = _csr(saved, "answer_matrix")
            self.router = LogisticRegression(C=ROUTER_C)
            self.router.classes_, self.router.coef_ = saved["router_classes"], saved["router_coef"]
            self.router.intercept_ = saved["router_intercept"]
        else:
            self.by_question, self.by_answer = _vectorizer(), _vectorizer()
            self.question_matrix = self.by_question.fit_transform([q.question for q in questions])
            self.answer_matrix = self.by_answer.fit_transform([f"{q.question} {q.answer}" for q in questions])
            samples = [(i, law) for i, q in enumerate(questions) for law in sorted({laws[r] for r in q.rows})]
            if len({law for _, law in samples}) < 2:
                raise RetrieverError(f"the training questions cite {len({law for _, law in samples})} law(s) in the "
                                     "statute store; at least 2 are needed")
            self.router = LogisticRegression(C=ROUTER_C, max_iter=3000)
            self.router.fit(self.question_matrix[[i for i, _ in samples]], [law for _, law in samples])
        self.router_column = {law: i for i, law in enumerate(self.router.classes_.tolist())}

    def arrays(self) -> dict[str, np.ndarray]:
        """Everything fitted, as plain arrays (saved with ``np.savez``; loaded without pickle)."""
        out = {"router_classes": np.array(self.router.classes_.tolist()), "router_coef": self.router.coef_,
               "router_intercept": self.router.intercept_}
        for name, vectorizer, matrix in (("question", self.by_question, self.question_matrix),
                                         ("answer", self.by_answer, self.answer_matrix)):
            terms = sorted(vectorizer.vocabulary_, key=vectorizer.vocabulary_.get)
            out |= {f"{name}_terms": np.array(terms), f"{name}_idf": vectorizer.idf_,
                    f"{name}_matrix_data": matrix.data, f"{name}_matrix_indices": matrix.indices,
                    f"{name}_matrix_indptr": matrix.indptr, f"{name}_matrix_shape": np.array(matrix.shape)}
        return out

    def neighbours(self, question: str, with_answers: bool, exclude: int | None) -> list[tuple[int, float]]:
        vectorizer, matrix = (self.by_answer, self.answer_matrix) if with_answers else (self.by_question, self.question_matrix)
        similarity = (matrix @ vectorizer.transform([question]).T).toarray().ravel()
        if exclude is not None:
            similarity[exclude] = -1.0
        return [(int(j), float(similarity[j])) for j in top_rows(similarity, NEIGHBOURS) if similarity[j] > 0]

    def position(self, question: str) -> int | None:
        """The memory index of a training question with exactly this text, else None."""
        return self._positions.get(question)

    def router_probs(self, question: str) -> np.ndarray:
        return self.router.predict_proba(self.by_question.transform([question]))[0]


def candidate_features(question: str, memory: Memory, exclude: int | None = None,
                       router_probs: np.ndarray | None = None) -> tuple[list[int], np.ndarray]:
    """(candidate rows of ``memory.index``, features: float array (candidates, len(FEATURES))). ``exclude``: a memory
    question left out of its own features (leave-one-out while fitting)."""
    index = memory.index
    bm25 = index.scores(question)
    best = float(bm25.max()) or 1.0
    lexical = [int(r) for r in top_rows(bm25, BM25_DEPTH) if bm25[r] > 0]
    rank = {r: i for i, r in enumerate(lexical)}
    cited, cited_best, cited_law, cited_answers = defaultdict(float), defaultdict(float), defaultdict(float), defaultdict(float)
    for j, similarity in memory.neighbours(question, False, exclude):
        rows = memory.questions[j].rows
        for r in rows:
            cited[r] += similarity
            cited_best[r] = max(cited_best[r], similarity)
        for law in {index.articles[r].law_name for r in rows}:
            cited_law[law] += similarity
    for j, similarity in memory.neighbours(question, True, exclude):
        for r in memory.questions[j].rows:
            cited_answers[r] += similarity
    own = memory.questions[exclude].rows if exclude is not None else frozenset()
    probs = memory.router_probs(question) if router_probs is None else router_probs
    named = index.laws_named(question)
    rows = list(dict.fromkeys(lexical + list(cited) + list(cited_answers)))
    features = np.zeros((len(rows), len(FEATURES)))
    for i, r in enumerate(rows):
        article = index.articles[r]
        law = article.law_name
        times = memory.times_cited[r] - (r in own)
        law_times = memory.times_law_cited[law] - sum(index.articles[o].law_name == law for o in own)
        if named:  # a law the question names is its law: the router, which knows only its training laws, gives way
            p_law = 1 / len(named) if law in named else 0.0
        else:
            column = memory.router_column.get(law)
            p_law = probs[column] if column is not None else 0.0
        features[i] = (bm25[r] / best, 1 / (1 + rank.get(r, BM25_DEPTH)), math.log1p(rank.get(r, BM25_DEPTH)),
                       cited[r], cited_best[r], cited_law[law], math.log1p(times), math.log1p(law_times),
                       law in named, article.doc_type in LAW_TYPES, r in cited or r in cited_answers, r in rank,
                       math.log(1e-4 + p_law), cited_answers[r])
    return rows, features


class TrainedRetriever:
    """BM25 candidates + memory, ranked by the fitted weights. ``search`` has ``BM25Index.search``'s contract."""

    def __init__(self, memory: Memory, weights: np.ndarray, bias: float, threshold: float, info: dict):
        self.memory, self.index = memory, memory.index
        self.weights, self.bias, self.threshold, self.info = weights, bias, threshold, info

    def ranked(self, question: str, leave_out_self: bool = False) -> tuple[list[int], np.ndarray]:
        """(candidate rows best first, their relevance probabilities). ``leave_out_self``: a memory question is ranked
        as if it were new (its own entry left out of the memory), as training data built from it must see it."""
        exclude = self.memory.position(question) if leave_out_self else None
        rows, features = candidate_features(question, self.memory, exclude)
        if not rows:
            return [], np.zeros(0)
        probability = 1 / (1 + np.exp(-(features @ self.weights + self.bias)))
        order = np.argsort(-probability, kind="stable")
        return [rows[i] for i in order], probability[order]

    def search(self, question: str, top_k: int = 5, leave_out_self: bool = False) -> list[Hit]:
        """The ``top_k`` articles, best first; ``score`` is the ranker's probability that the article is relevant."""
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        rows, probability = self.ranked(question, leave_out_self)
        return [Hit(self.index.articles[r], float(p), rank)
                for rank, (r, p) in enumerate(zip(rows[:top_k], probability), start=1)]

    def relevances(self, question: str) -> dict[tuple, float]:
        """{(law_name, number, suffix): the ranker's probability that the article answers ``question``} over the
        candidates; an article outside them has nothing in the question or the memory pointing to it."""
        rows, probability = self.ranked(question)
        articles = self.index.articles
        return {(articles[r].law_name, articles[r].number, articles[r].suffix): float(p) for r, p in zip(rows, probability)}

    # ----- save / load --------------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        """``memory.npz``, ``questions.jsonl`` and ``ranker.json``, each written to a temporary name and renamed (atomic)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        articles = self.index.articles
        lines = [json.dumps({"question": q.question, "answer": q.answer,
                             "gold": sorted([articles[r].law_name, articles[r].number, articles[r].suffix] for r in q.rows)},
                            ensure_ascii=False) for q in self.memory.questions]
        ranker = {"version": RANKER_VERSION, "features": list(FEATURES), "weights": self.weights.tolist(),
                  "bias": self.bias, "threshold": self.threshold, "bm25_depth": BM25_DEPTH, "neighbours": NEIGHBOURS,
                  **self.info}
        tmp = directory / ".memory.tmp.npz"
        np.savez(tmp, **self.memory.arrays())
        tmp.replace(directory / "memory.npz")
        for name, text in (("questions.jsonl", "\n".join(lines) + "\n"),  # ranker.json last: it marks a complete save
                           ("ranker.json", json.dumps(ranker, ensure_ascii=False, indent=1))):
            tmp = directory / f".{name}.tmp"
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(directory / name)

    @classmethod
    def load(cls, directory: str | Path, index: BM25Index) -> TrainedRetriever:
        """Raises RetrieverError naming the directory when a file is missing or was written by another version."""
        directory = Path(directory)
        try:
            ranker = json.loads((directory / "ranker.json").read_text(encoding="utf-8"))
            records = [json.loads(line) for line in (directory / "questions.jsonl").read_text(encoding="utf-8").splitlines() if line]
            with np.load(directory / "memory.npz", allow_pickle=False) as data:
                saved = {name: data[name] for name in data.files}
        except FileNotFoundError as e:
            raise RetrieverError(f"{directory}: no trained retriever there ({Path(e.filename).name} missing); train one "
                                 "with `python tools/train_retriever.py`") from e
        except ValueError as e:
            raise RetrieverError(f"{directory}: not a trained retriever: {e}") from e
        if ranker.get("version") != RANKER_VERSION or ranker.get("features") != list(FEATURES):
            raise RetrieverError(f"{directory}: trained by another version of the retriever (version "
                                 f"{ranker.get('version')}); train it again with `python tools/train_retriever.py`")
        questions = memory_questions(records, index)[0]
        info = {k: v for k, v in ranker.items() if k not in ("weights", "bias", "threshold", "features", "version")}
        return cls(Memory(questions, index, saved), np.array(ranker["weights"]), float(ranker["bias"]),
                   float(ranker["threshold"]), info)


def memory_questions(records: list[dict], index: BM25Index) -> tuple[list[MemoryQuestion], int]:
    """Records ``{"question", "answer", "gold": [[law_name, number, suffix], …]}`` → memory questions with the index
    rows of their gold articles, and how many gold articles the index does not hold (left out of the memory)."""
    row_of = {(a.law_name, a.number, a.suffix): r for r, a in enumerate(index.articles)}
    questions, unknown = [], 0
    for record in records:
        rows = [row_of.get(tuple(key)) for key in record["gold"]]
        unknown += rows.count(None)
        questions.append(MemoryQuestion(record["question"], record.get("answer") or "",
                                        frozenset(r for r in rows if r is not None)))
    return questions, unknown


def retriever_dir() -> Path:
    """Where --rag looks for the trained retriever: ``$LAWGPT_RETRIEVER_DIR`` or models/retriever."""
    return Path(os.environ.get("LAWGPT_RETRIEVER_DIR") or DEFAULT_DIR)
