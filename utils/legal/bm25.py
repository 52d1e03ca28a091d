"""BM25 retrieval over the statutes in force, with the index cached on disk.

Documents are the store's current articles (utils/legal/statutes.py: 刑法 counts as current, repealed laws and
deleted articles do not), minus amendments (their text is already in the amended law) and boilerplate
(「违反本法规定，构成犯罪的…」 answers no question). The indexed text is the law's short name, chapter,
section, the article's 刑法 charge names and its text, cut by jieba's search mode.

Scoring is Okapi BM25 (k1=1.2, b=0.75, Lucene's non-negative idf) over the query's distinct terms, computed
from posting lists with numpy (no scipy): ~24k articles, a few ms a query. On top of it, two boosts that
use what the store knows:

- charge names: a query that names a 刑法 charge (「罪名:盗窃」, 「诈骗罪」) lifts the articles defining it;
- law names: a query that names a law (「劳动合同法」, 「《刑法》」) lifts that law's articles.

And a small table of everyday words → statute words (``COLLOQUIAL``: 偷 → 盗窃, 老板 → 用人单位, …) is
added to the query. The index is cached in ``.cache/retrieval/`` under a key made of the store's fingerprint
(hash of laws.db + charge table + cleaning version) and this module's version: a changed database or code
builds a new index and removes the stale one.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from utils.common.paths import REPO_ROOT
from utils.legal.statutes import LAW_TYPES, Article, StatuteStore

INDEX_VERSION = "1"
CACHE_DIR = REPO_ROOT / ".cache" / "retrieval"
K1, B = 1.2, 0.75
CHARGE_BOOST, LAW_BOOST = 0.6, 0.25  # fractions of the query's best BM25 score
# Articles of documents that are not laws (judicial interpretations, regulations: issue 30) score 0.8 of their BM25:
# chosen on LeCoQA's train split (recall@5 over all gold articles: 0.314 at 1.0, 0.334 at 0.7–0.8, 0.307 at 0) and
# the colloquial dev questions (0.757 at 1.0, 0.784 at ≤ 0.9); benchmarks/LOG.md, 2026-12-06
OTHER_TYPES_WEIGHT = 0.8
_TERM = re.compile(r"[\u4e00-\u9fff]|[A-Za-z0-9]")
STOPWORDS = frozenset(
    "的 了 是 在 和 与 对 于 由 从 被 把 及 或 并 等 请问 我 你 他 她 它 我们 他们 这 那 个 之 其 什么 怎么 怎么办 怎样 如何 "
    "吗 呢 吧 啊 呀 会 能 能不能 可以 可不可以 要 要不要 还 也 都 就 又 很 有 没 没有 不 是不是 一下 一个 现在 已经 自己 "
    "给 让 说 算 里 上 下 后 前 时候 时 多少 多久 几 哪些 这个 那个 这样 如果 因为 所以 但是 然后 而且".split()
)
# Everyday words → the words statutes use. Generic vocabulary of legal Q&A, not a list of answers.
COLLOQUIAL = {
    # crimes and violence
    "偷": "盗窃", "小偷": "盗窃", "骗": "诈骗", "抢": "抢劫", "打人": "殴打 伤害", "打伤": "伤害 殴打", "打架": "殴打 伤害",
    "轻伤": "故意伤害", "重伤": "故意伤害 重伤", "砍": "伤害", "还手": "防卫", "反抗": "防卫 制止 不法侵害",
    "坐牢": "有期徒刑 刑事责任", "判刑": "有期徒刑 刑事责任", "判": "处 有期徒刑", "犯法": "犯罪 违法", "造谣": "捏造 诽谤",
    "骂": "侮辱", "人贩子": "拐卖", "盗版": "著作权 复制发行", "负责": "责任 承担",
    # traffic
    "喝酒": "饮酒", "喝多": "醉酒", "喝醉": "醉酒", "酒驾": "饮酒 驾驶 机动车", "醉驾": "醉酒 驾驶 机动车",
    "开车": "驾驶 机动车", "撞": "交通事故 肇事 机动车", "跑了": "逃逸", "司机": "机动车 驾驶人", "过马路": "行人",
    "驾照": "驾驶证",
    # work
    "老板": "用人单位", "公司": "用人单位", "单位": "用人单位", "员工": "劳动者",
    "不发工资": "未及时足额支付劳动报酬", "拖欠工资": "拖欠 劳动报酬", "辞退": "解除 劳动合同", "开除": "解除 劳动合同",
    "辞职": "解除 劳动合同", "加班": "延长 工作时间", "周末": "休息日", "节假日": "法定休假日", "社保": "社会保险",
    "怀孕": "孕期 女职工", "双倍": "二倍", "签": "订立",
    # family and inheritance
    "爸妈": "父母", "媳妇": "妇女 妻子", "老婆": "妻子 配偶",
    "老公": "丈夫 配偶", "结婚": "婚姻", "冷静期": "撤回 离婚登记 三十日", "遗产": "继承 遗产", "没留遗嘱": "法定继承",
    "没有遗嘱": "法定继承", "手写": "自书 亲笔",
    # civil life
    "房东": "出租人", "租房": "租赁", "租客": "承租人", "借钱": "借款", "还钱": "返还 借款", "利息": "利率 利息",
    "高利贷": "高利 放贷", "不能起诉": "诉讼时效", "多久起诉": "诉讼时效", "狗": "动物 饲养", "宠物": "动物 饲养",
    "扔": "抛掷", "楼上": "建筑物", "砸伤": "损害", "摔伤": "人身损害", "受伤": "人身损害", "赔": "赔偿", "假货": "欺诈",
    "卖": "出售 贩卖", "买": "收买 购买", "网上": "网络", "手机号": "个人信息", "信息": "个人信息",
    "过期": "食品安全 标准", "变质": "食品安全 标准", "吃坏": "损害", "罚": "罚款",
}


@dataclass(frozen=True)
class Hit:
    article: Article
    score: float
    rank: int

    def to_dict(self) -> dict:
        return {"rank": self.rank, "score": round(self.score, 4), "citation": self.article.citation,
                "law_name": self.article.law_name, "number": self.article.number, "suffix": self.article.suffix,
                "chapter": self.article.chapter, "charges": list(self.article.charges), "text": self.article.text}


def _jieba():
    import jieba

    jieba.setLogLevel(logging.WARNING)  # its "Building prefix dict…" banner on every start
    return jieba


def tokenize(text: str) -> list[str]:
    """jieba search-mode tokens (words and their sub-words), without stopwords and punctuation."""
    return [t for t in _jieba().lcut_for_search(text) if _TERM.match(t) and t not in STOPWORDS]


def index_documents(store: StatuteStore) -> list[Article]:
    return [a for a in store.current_articles()
            if not a.is_boilerplate and a.doc_type not in ("修正案", "修改决定") and "修正案" not in a.law_name]


def _indexed_text(article: Article) -> str:
    return " ".join((article.short_name, article.chapter, article.section, " ".join(article.charges), article.text))


class BM25Index:
    """Okapi BM25 over posting lists: ``indptr[t]:indptr[t+1]`` slices ``postings``/``weights`` for term t."""

    def __init__(self, store: StatuteStore, articles: list[Article], vocab: list[str], indptr: np.ndarray,
                 postings: np.ndarray, weights: np.ndarray, from_cache: bool, build_seconds: float):
        self.store, self.articles = store, articles
        self.term_ids = {term: i for i, term in enumerate(vocab)}
        self.indptr, self.postings, self.weights = indptr, postings, weights
        self.from_cache, self.build_seconds = from_cache, build_seconds
        self.cache_dir = CACHE_DIR  # load() sets where it found the index; the e5 vectors are kept beside it
        self.row_of_id = {article.id: row for row, article in enumerate(articles)}
        self._law_rows: dict[str, np.ndarray] = {}
        self._charge_rows: dict[str, np.ndarray] = {}
        for row, article in enumerate(articles):
            self._law_rows.setdefault(article.law_name, []).append(row)
            for charge in article.charges:
                self._charge_rows.setdefault(charge.removesuffix("罪"), []).append(row)
        self._law_rows = {k: np.array(v) for k, v in self._law_rows.items()}
        self._charge_rows = {k: np.array(v) for k, v in self._charge_rows.items() if len(k) >= 2}
        self._law_names = sorted({(name, a.law_name) for a in articles for name in (a.short_name, a.law_name)},
                                 key=lambda pair: -len(pair[0]))
        self._type_weights = np.array([1.0 if a.doc_type in LAW_TYPES else OTHER_TYPES_WEIGHT for a in articles])

    # ----- build / cache ------------------------------------------------------------------------------------
    @classmethod
    def build(cls, store: StatuteStore) -> BM25Index:
        start = time.perf_counter()
        articles = index_documents(store)
        vocab: dict[str, int] = {}
        doc_terms, lengths = [], np.zeros(len(articles), dtype=np.float64)
        for row, article in enumerate(articles):
            counts = Counter(tokenize(_indexed_text(article)))
            doc_terms.append({vocab.setdefault(t, len(vocab)): c for t, c in counts.items()})
            lengths[row] = sum(counts.values())
        n_docs, avgdl = len(articles), lengths.mean()
        postings_by_term: list[list[tuple[int, int]]] = [[] for _ in vocab]
        for row, terms in enumerate(doc_terms):
            for term, count in terms.items():
                postings_by_term[term].append((row, count))
        indptr = np.zeros(len(vocab) + 1, dtype=np.int64)
        indptr[1:] = np.cumsum([len(p) for p in postings_by_term])
        postings = np.fromiter((row for p in postings_by_term for row, _ in p), dtype=np.int32, count=indptr[-1])
        tf = np.fromiter((c for p in postings_by_term for _, c in p), dtype=np.float64, count=indptr[-1])
        df = np.diff(indptr).astype(np.float64)
        idf = np.log1p((n_docs - df + 0.5) / (df + 0.5))
        norm = K1 * (1 - B + B * lengths[postings] / avgdl)
        weights = (np.repeat(idf, np.diff(indptr)) * tf * (K1 + 1) / (tf + norm)).astype(np.float32)
        return cls(store, articles, list(vocab), indptr, postings, weights, False, time.perf_counter() - start)

    @staticmethod
    def cache_key(store: StatuteStore) -> str:
        return f"{store.fingerprint}-v{INDEX_VERSION}-jieba{_jieba().__version__}"

    @classmethod
    def load(cls, store: StatuteStore | None = None, cache_dir: str | Path = CACHE_DIR, rebuild: bool = False) -> BM25Index:
        """The index for ``store`` (default: the packaged one) from the disk cache, built and saved if missing."""
        store = store or StatuteStore.load()
        cache_dir = Path(cache_dir)
        path = cache_dir / f"bm25-{cls.cache_key(store)}.npz"
        if path.is_file() and not rebuild:
            start = time.perf_counter()
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                rows = {a.id: a for a in index_documents(store)}
                articles = [rows[i] for i in data["article_ids"].tolist()]
                index = cls(store, articles, data["vocab"].tolist(), data["indptr"], data["postings"], data["weights"],
                            True, time.perf_counter() - start)
            if meta.get("key") != cls.cache_key(store):
                raise RuntimeError(f"{path}: cache key mismatch; delete the file to rebuild")
            index.cache_dir = cache_dir
            return index
        index = cls.build(store)
        index.cache_dir = cache_dir
        index.save(path)
        for stale in cache_dir.glob("bm25-*.npz"):
            if stale != path:
                stale.unlink()  # built from an older database or code version
        return index

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.tmp.npz")
        vocab = sorted(self.term_ids, key=self.term_ids.get)
        np.savez(tmp, vocab=np.array(vocab), indptr=self.indptr, postings=self.postings, weights=self.weights,
                 article_ids=np.array([a.id for a in self.articles], dtype=np.int64),
                 meta=np.array(json.dumps({"key": self.cache_key(self.store), "documents": len(self.articles)})))
        tmp.replace(path)

    # ----- search -------------------------------------------------------------------------------------------
    @staticmethod
    def expansion(query: str) -> str:
        """The statute words for the everyday words in the query (「偷」 → 「盗窃」)."""
        return " ".join(words for key, words in COLLOQUIAL.items() if key in query)

    def query_terms(self, query: str, expand: bool = True) -> list[int]:
        """Distinct indexed terms of the query (plus its statute words): long facts repeat words, BM25 should not."""
        text = f"{query} {self.expansion(query)}" if expand else query
        return list(dict.fromkeys(self.term_ids[t] for t in tokenize(text) if t in self.term_ids))

    def scores(self, query: str, expand: bool = True, boosts: bool = True) -> np.ndarray:
        terms = self.query_terms(query, expand)
        scores = np.zeros(len(self.articles), dtype=np.float64)
        if terms:
            ids = np.array(terms)
            idx = np.concatenate([np.arange(s, e) for s, e in zip(self.indptr[ids], self.indptr[ids + 1])])
            scores = np.bincount(self.postings[idx], weights=self.weights[idx], minlength=len(self.articles))
            if boosts:
                scores *= self._type_weights
        if boosts and scores.max(initial=0) > 0:
            top = scores.max()
            text = query + (" " + self.expansion(query) if expand else "")
            for charge, rows in self._charge_rows.items():
                if charge in text:
                    scores[rows] += CHARGE_BOOST * top
            named = self.laws_named(query)
            for law_name in named:
                scores[self._law_rows[law_name]] += LAW_BOOST * top / len(named)
        return scores

    def laws_named(self, query: str) -> set[str]:
        """Laws named in the query (longest names first, so 劳动合同法 does not also count as 合同法)."""
        found, rest = set(), query
        for name, law_name in self._law_names:
            if len(name) >= 2 and name in rest:
                found.add(law_name)
                rest = rest.replace(name, "|")
        return found

    def search(self, query: str, top_k: int = 5, expand: bool = True, boosts: bool = True) -> list[Hit]:
        """Top-k articles by BM25 (+ boosts), best first; articles scoring 0 are left out.

        e5 re-ranking and hybrid search build on this (utils/legal/dense.py; chosen in utils/legal/rag.retrieve)."""
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        scores = self.scores(query, expand, boosts)
        best = top_rows(scores, top_k)
        return [Hit(self.articles[i], float(scores[i]), rank) for rank, i in enumerate(best, start=1) if scores[i] > 0]


def top_rows(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` highest scores, best first (argpartition: no full sort of ~24k scores)."""
    n = min(n, len(scores))
    if n < 1:
        return np.zeros(0, dtype=np.int64)
    best = np.argpartition(-scores, n - 1)[:n]
    return best[np.argsort(-scores[best], kind="stable")]


def idf_of(df: int, n_docs: int) -> float:
    """The idf used above, exposed for tests: log(1 + (N - df + 0.5) / (df + 0.5))."""
    return math.log1p((n_docs - df + 0.5) / (df + 0.5))
