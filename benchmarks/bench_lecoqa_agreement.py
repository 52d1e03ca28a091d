"""Our LeCoQA scorer against the published table: every published run's generated answers, scored by
utils/lecoqa/metrics.py, beside the METEOR and BLEU its authors report.

    python benchmarks/bench_lecoqa_agreement.py --lecoqa_dir ../shared/lecoqa     # a checkout of oneal2000/LeCoQA

Prints a Markdown table (published / ours per run) and the largest difference (exit status 1 when one exceeds
--tolerance, 0.001), then our grounding figures of the same answers and of the lawyers' own (utils/lecoqa/grounding.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import fire

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from utils.lecoqa.metrics import read_answers, score_answers  # noqa: E402
from utils.lecoqa.published import PUBLISHED, published  # noqa: E402
from utils.lecoqa.report import expected_path  # noqa: E402


def main(lecoqa_dir: str = str(ROOT.parent / "shared" / "lecoqa"), tolerance: float = 0.001) -> float:
    """Score every published run; returns the largest |ours - published| over METEOR and BLEU."""
    expected = read_answers(expected_path(lecoqa_dir))
    print("| run | METEOR published | ours | BLEU published | ours |\n|---|---:|---:|---:|---:|")
    worst = 0.0
    for run in PUBLISHED:
        ours = score_answers(expected, read_answers(Path(lecoqa_dir) / "baseline_results" / f"{run}.jsonl"))
        worst = max(worst, *(abs(ours[m] - published(run, m)) for m in ("METEOR", "BLEU")))
        print(f"| {run} | {published(run, 'METEOR'):.4f} | {ours['METEOR']:.4f} | {published(run, 'BLEU'):.4f} | "
              f"{ours['BLEU']:.4f} |", flush=True)
    print(f"\nlargest difference: {worst:.6f} over {len(PUBLISHED)} runs x 2 metrics ({len(expected)} answers each)")
    from utils.lecoqa.grounding import grounding
    from utils.lecoqa.questions import load_questions
    from utils.lecoqa.report import grounding_table
    from utils.legal.statutes import StatuteStore

    store, questions = StatuteStore.load(), load_questions(lecoqa_dir, "test")
    runs = {run: grounding(questions, read_answers(Path(lecoqa_dir) / "baseline_results" / f"{run}.jsonl"), store)
            for run in PUBLISHED}
    runs["the lawyers' answers"] = grounding(questions, {q["id"]: q["answer"] for q in questions}, store)
    print("\n" + grounding_table(runs))
    from utils.lecoqa.grounding import retrieval_recall
    from utils.legal import rag

    index = rag.default_index()
    recall = retrieval_recall(questions, index.store, lambda question, k: rag.retrieve(question, k, index=index))
    print("BM25 (--rag's default) on the test questions, gold articles in the store: " +
          ", ".join(f"{k} {v:.3f}" for k, v in recall.items() if k.startswith("recall")) +
          f" (of {recall['gold_in_store']})")
    if worst > tolerance:
        raise SystemExit(1)
    return worst


if __name__ == "__main__":
    fire.Fire(main, serialize=lambda result: None)
