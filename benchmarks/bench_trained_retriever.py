"""The trained retriever against BM25 on questions it never trained on: LeCoQA's test split and our everyday sets.

    python tools/train_retriever.py                     # once (~1 min), → models/retriever
    python benchmarks/bench_trained_retriever.py --lecoqa_dir ../shared/lecoqa [--retriever_dir models/retriever] \
        [--output_json outputs/bench_trained_retriever.json]

For each question set and retriever: **hit@k** — the share of *all* questions with a gold article among the top k
(LeCoQA questions whose gold articles are outside the store count as misses: the issue's measure), **recall@k** —
the share of gold articles in the top k, over all gold articles. Sets: LeCoQA test (309; its train split is the
retriever's memory, the test split never was), and resources/retrieval_questions.jsonl by split (dev, test, test2:
seen while writing BM25's word table; test3, test4: written blind). Latency: wall time of one search, p50/p95 over
every question of the run, single process, after one warm-up query; the retriever's load time and its training
time (from its run_info.json).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from utils.common.datafiles import read_records  # noqa: E402
from utils.lecoqa.questions import gold_articles, load_questions  # noqa: E402
from utils.legal.bm25 import BM25Index  # noqa: E402
from utils.legal.trained_retriever import DEFAULT_DIR, TrainedRetriever  # noqa: E402

KS = (1, 5, 10)
EVERYDAY = ROOT / "resources" / "retrieval_questions.jsonl"


def key(article) -> tuple:
    return (article.law_name, article.number, article.suffix)


def question_sets(lecoqa_dir: str | None, index: BM25Index) -> dict[str, list[tuple[str, set, int]]]:
    """{set name: [(question, gold keys in the store, number of gold articles)]}."""
    sets: dict[str, list] = {}
    if lecoqa_dir:
        sets["lecoqa-test"] = []
        for q in load_questions(lecoqa_dir, "test"):
            inside, outside = gold_articles(q["gold"], index.store)
            sets["lecoqa-test"].append((q["question"], inside, len(inside) + len(outside)))
    for record in read_records(EVERYDAY):
        gold = {key(index.store.parse_citation(c)) for c in record.data["gold"]}
        sets.setdefault(f"everyday-{record.data['split']}", []).append((record.data["question"], gold, len(gold)))
    return sets


def measure(search, items: list[tuple[str, set, int]]) -> dict:
    hits, found, latencies = dict.fromkeys(KS, 0), dict.fromkeys(KS, 0), []
    gold_total = sum(n for _, _, n in items)
    for question, gold, _ in items:
        start = time.perf_counter()
        ranked = [key(h.article) for h in search(question, max(KS))]
        latencies.append((time.perf_counter() - start) * 1000)
        for k in KS:
            hits[k] += bool(gold & set(ranked[:k]))
            found[k] += len(gold & set(ranked[:k]))
    n = len(items)
    return {"questions": n, **{f"hit@{k}": round(hits[k] / n, 3) for k in KS},
            **{f"recall@{k}": round(found[k] / gold_total, 3) for k in KS}, "latencies_ms": latencies}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lecoqa_dir", help="a LeCoQA checkout (its test split); without it only the everyday sets run")
    p.add_argument("--retriever_dir", default=str(DEFAULT_DIR))
    p.add_argument("--output_json")
    args = p.parse_args(argv)
    index = BM25Index.load()
    start = time.perf_counter()
    trained = TrainedRetriever.load(args.retriever_dir, index)
    load_s = time.perf_counter() - start
    trained.search("热身", 1)
    sets = question_sets(args.lecoqa_dir, index)
    rows, latency = {}, {"bm25": [], "trained": []}
    for name, items in sets.items():
        for retriever, search in (("bm25", index.search), ("trained", trained.search)):
            result = measure(search, items)
            latency[retriever] += result.pop("latencies_ms")
            rows[f"{name}/{retriever}"] = result
    held_out = [k for k in sets if k in ("everyday-test3", "everyday-test4")]
    for retriever in ("bm25", "trained"):
        both = [item for name in held_out for item in sets[name]]
        if both:
            search = index.search if retriever == "bm25" else trained.search
            result = measure(search, both)
            result.pop("latencies_ms")
            rows[f"everyday-test3+test4/{retriever}"] = result
    run_info = json.loads((Path(args.retriever_dir) / "run_info.json").read_text(encoding="utf-8")) \
        if (Path(args.retriever_dir) / "run_info.json").is_file() else {}
    out = {"rows": rows, "latency_ms": {r: {"p50": round(float(np.percentile(v, 50)), 1),
                                            "p95": round(float(np.percentile(v, 95)), 1)} for r, v in latency.items()},
           "load_s": round(load_s, 2), "training_s": run_info.get("seconds"),
           "training_questions": run_info.get("training_questions")}
    print(f"{'set/retriever':<34} {'n':>4} " + " ".join(f"{f'hit@{k}':>7}" for k in KS) + " "
          + " ".join(f"{f'rec@{k}':>7}" for k in KS))
    for name, r in rows.items():
        print(f"{name:<34} {r['questions']:>4} " + " ".join(f"{r[f'hit@{k}']:>7.3f}" for k in KS) + " "
              + " ".join(f"{r[f'recall@{k}']:>7.3f}" for k in KS))
    print(f"latency ms: {out['latency_ms']}; load {out['load_s']} s; training {out['training_s']} s")
    if args.output_json:
        Path(args.output_json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output_json).write_text(json.dumps(out, ensure_ascii=False, indent=2), encoding="utf-8")
    return out


if __name__ == "__main__":
    main()
