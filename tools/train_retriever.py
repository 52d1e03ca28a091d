"""Train the statute retriever on real layperson questions (what ``--rag`` uses when it is present).

    python tools/train_retriever.py                                  # LeCoQA train (shipped) → models/retriever
    python tools/train_retriever.py --cv_folds 5                     # + 5-fold cross-validation figures (~3.5 min)
    python tools/train_retriever.py --lecoqa_dir ../LeCoQA           # from a LeCoQA checkout (its train split only)
    python tools/train_retriever.py --questions my_questions.jsonl --output_dir models/retriever-mine

The retriever (utils/legal/trained_retriever.py) re-ranks BM25's candidates, and the articles that similar training
questions cited, with a logistic regression over retrieval features, fitted with our own retrieval's hard negatives.
Training data: questions with gold articles — by default LeCoQA's train split (1,234 real consultation questions
with a lawyer's answer and the articles cited; MIT; resources/lecoqa/), never its test split. ~1 min on 2 cores.

infer.py, webui.py, api.py and evaluate.py use it under ``--rag`` when ``models/retriever/`` holds one (or
``$LAWGPT_RETRIEVER_DIR``); without it they use BM25 and say so. ``run_info.json`` records the data, the settings,
the time and, with ``--cv_folds``, the cross-validated hit@k and recall@k against BM25 alone.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from utils.common.datafiles import DataError, files_sha256  # noqa: E402
from utils.common.entry import run_entry  # noqa: E402
from utils.lecoqa.questions import SHIPPED_TRAIN, gold_articles, load_questions, read_question_file  # noqa: E402
from utils.legal.bm25 import BM25Index  # noqa: E402
from utils.legal.retriever_training import cross_validate, fit  # noqa: E402
from utils.legal.trained_retriever import DEFAULT_DIR, memory_questions  # noqa: E402
from utils.model.loader import write_run_info  # noqa: E402


def read_training_questions(args: argparse.Namespace) -> tuple[list[dict], str]:
    """(questions, where they came from); the LeCoQA checkout's train split, or a questions file."""
    if args.lecoqa_dir:
        return load_questions(args.lecoqa_dir, "train"), f"{args.lecoqa_dir} (LeCoQA train split)"
    return read_question_file(args.questions), str(args.questions)


def resolve_gold(questions: list[dict], index: BM25Index) -> tuple[list[dict], dict]:
    """Records for the memory (gold as [law_name, number, suffix] of the store) and counts of what resolved."""
    records, outside = [], 0
    for q in questions:
        inside, missing = gold_articles(q["gold"], index.store)
        outside += len(missing)
        records.append({"question": q["question"], "answer": q["answer"] if isinstance(q["answer"], str) else "",
                        "gold": sorted([law, number, suffix] for law, number, suffix in inside)})
    gold = sum(len(q["gold"]) for q in questions)
    return records, {"gold_articles": gold, "gold_outside_store": outside}


def main(args: argparse.Namespace) -> dict:
    if args.limit < 0:
        raise DataError(f"--limit {args.limit}: 0 (all) or more")
    if args.cv_folds == 1 or args.cv_folds < 0:
        raise DataError(f"--cv_folds {args.cv_folds}: 0 (none) or at least 2")
    questions, source = read_training_questions(args)
    questions = questions[:args.limit] if args.limit else questions
    if not questions:
        raise DataError(f"{source}: no questions")
    start = time.perf_counter()
    index = BM25Index.load()
    records, counts = resolve_gold(questions, index)
    memory, not_indexed = memory_questions(records, index)
    print(f"[train_retriever] {len(questions)} questions from {source}; {counts['gold_outside_store']} of "
          f"{counts['gold_articles']} gold articles are not in the statute store, {not_indexed} not indexed")
    info = {"source": source, "limit": args.limit or None, "source_sha256": files_sha256([args.questions]) if not args.lecoqa_dir else None, **counts}
    if args.cv_folds:
        with tqdm(total=len(memory), desc=f"{args.cv_folds}-fold cross-validation", unit="q") as bar:
            info["cross_validation"] = cross_validate(memory, index, args.cv_folds, progress=bar.update)
    with tqdm(total=len(memory), desc="fitting", unit="q") as bar:
        threshold = info.get("cross_validation", {}).get("threshold", args.threshold)
        retriever = fit(memory, index, info=info, threshold=threshold, progress=bar.update)
    retriever.save(args.output_dir)
    run_info = {"tool": "tools/train_retriever.py", "output_dir": str(args.output_dir), "seconds": round(time.perf_counter() - start, 1),
                "relevance_threshold": threshold, **{k: v for k, v in retriever.info.items() if k != "cross_validation"},
                "cross_validation": info.get("cross_validation")}
    write_run_info(args.output_dir, run_info)
    cv = run_info["cross_validation"]
    if cv:
        print(f"[train_retriever] {cv['folds']}-fold CV: hit@5 {cv['hit@5']:.3f} (BM25 {cv['bm25_hit@5']:.3f}), "
              f"hit@1 {cv['hit@1']:.3f} (BM25 {cv['bm25_hit@1']:.3f}); relevance threshold {threshold:.3f}")
    print(f"[train_retriever] → {args.output_dir} in {run_info['seconds']} s")
    return run_info


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--questions", type=Path, default=SHIPPED_TRAIN,
                        help="training questions, .jsonl or .jsonl.xz: {question, gold: [article names], answer?} per "
                             "line (default: the shipped LeCoQA train split)")
    source.add_argument("--lecoqa_dir", help="a LeCoQA checkout: its data/example/train.json instead of --questions")
    parser.add_argument("--output_dir", type=Path, default=DEFAULT_DIR,
                        help="where the retriever goes (default models/retriever, where --rag looks for it)")
    parser.add_argument("--cv_folds", type=int, default=0,
                        help="k-fold cross-validation first (hit@k, recall@k vs BM25; the relevance threshold): "
                             "0 = none (default), else k >= 2; ~40 s a fold on 2 cores")
    parser.add_argument("--limit", type=int, default=0,
                        help="train on the first N questions only (quick runs; default 0 = all)")
    parser.add_argument("--threshold", type=float, default=0.2,
                        help="relevance threshold of the citation check when no --cv_folds chooses it (default 0.2: "
                             "5-fold CV on LeCoQA train gave 0.206)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(run_entry("train_retriever", lambda: main(parse_args())))
