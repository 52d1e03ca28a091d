"""The statute store with and without the documents beyond laws (issue 30): what it holds, how many of LeCoQA's gold
articles it has, how often BM25 retrieves them, and what the bigger index costs.

    python benchmarks/bench_statute_sources.py --lecoqa_dir ../shared/lecoqa [--split test] [--output_json F]

Two stores: **before** — laws.db alone (``StatuteStore.load(documents=[])``); **after** — the default store (laws.db +
``resources/statutes/`` + ``data/statutes/``). For each: documents and articles in force by type; the gold articles
of LeCoQA's questions (``--split``) that the store holds (a gold name counts when the checker verifies it as that
document's article: utils/lecoqa/questions.py); BM25 recall@1/5/10 over all gold articles (those outside the store
count as missed) and over those in the store; the BM25 index's build time and the peak memory (RSS) of a fresh
process that loads the store and builds the index, without the cache.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from utils.lecoqa.grounding import retrieval_recall  # noqa: E402
from utils.lecoqa.questions import gold_articles, load_questions  # noqa: E402
from utils.legal.statutes import StatuteStore  # noqa: E402

STORES = {"before": [], "after": None}  # the documents argument of StatuteStore.load


def build_cost(documents: list | None) -> dict:
    """Seconds to build the BM25 index and the peak RSS (MB) of a fresh process that loads the store and builds it."""
    code = (f"import resource, time, sys; sys.path.insert(0, {str(ROOT)!r})\n"
            "from utils.legal.statutes import StatuteStore\nfrom utils.legal.bm25 import BM25Index\n"
            f"store = StatuteStore.load(documents={documents!r})\nt = time.perf_counter()\nBM25Index.build(store)\n"
            "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    return {"bm25_build_s": round(float(out[-2]), 1), "peak_rss_mb": round(float(out[-1]))}


def figures(store: StatuteStore, questions: list[dict], documents: list | None) -> dict:
    from utils.legal.bm25 import BM25Index

    articles = Counter(a.doc_type for a in store.current_articles())
    laws = Counter(law.doc_type for law in store.laws if law.in_force)
    inside = outside = 0
    for q in questions:
        held, missing = gold_articles(q["gold"], store)
        inside, outside = inside + len(held), outside + len(missing)
    index = BM25Index.build(store)
    recall = retrieval_recall(questions, store, lambda question, k: index.search(question, k))
    return {"documents_in_force": dict(laws), "articles_in_force": dict(articles), "gold_in_store": inside,
            "gold_total": inside + outside, "recall": recall, **build_cost(documents)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lecoqa_dir", default=str(ROOT.parent / "shared" / "lecoqa"))
    parser.add_argument("--split", default="test", choices=("test", "train"))
    parser.add_argument("--output_json")
    args = parser.parse_args(argv)
    questions = load_questions(args.lecoqa_dir, args.split)
    results = {}
    for name, documents in STORES.items():
        start = time.perf_counter()
        store = StatuteStore.load(documents=documents)
        results[name] = {"store_load_s": round(time.perf_counter() - start, 1),
                         **figures(store, questions, documents)}
        print(f"[bench_statute_sources] {name}: {json.dumps(results[name], ensure_ascii=False)}", flush=True)
    print(f"\n| LeCoQA {args.split} ({len(questions)} questions) | before (laws.db) | after (+ documents) |\n|---|---:|---:|")
    b, a = results["before"], results["after"]
    rows = [("gold articles in the store", lambda r: f"{r['gold_in_store']} of {r['gold_total']} "
                                                     f"({100 * r['gold_in_store'] / r['gold_total']:.1f}%)")]
    rows += [(f"BM25 recall@{k}, all gold / gold in the store", lambda r, k=k: f"{r['recall'][f'recall_all@{k}']:.3f} / "
                                                                             f"{r['recall'][f'recall@{k}']:.3f}")
             for k in (1, 5, 10)]
    rows += [("articles in force", lambda r: f"{sum(r['articles_in_force'].values()):,}"),
             ("BM25 index build (s) / peak RSS (MB)", lambda r: f"{r['bm25_build_s']} / {r['peak_rss_mb']}")]
    for label, cell in rows:
        print(f"| {label} | {cell(b)} | {cell(a)} |")
    print(f"\n(this process: peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)")
    if args.output_json:
        Path(args.output_json).write_text(json.dumps(results, ensure_ascii=False, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
