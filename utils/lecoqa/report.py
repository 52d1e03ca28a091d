"""LeCoQA scores of a set of answers (a file, or a model's run): their metrics beside the published rows, and our
grounding figures (evaluate.py --benchmark lecoqa)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from utils.common.datafiles import DataError
from utils.lecoqa.grounding import grounding
from utils.lecoqa.metrics import METRICS, read_answers, score_answers
from utils.lecoqa.published import COLUMNS, MODELS, PUBLISHED, SETUPS
from utils.lecoqa.questions import load_questions

EXPECTED = Path("evaluation") / "expected.jsonl"  # the lawyers' answers to the 309 test questions, in a LeCoQA checkout
NOT_COMPUTED = ("BERTScore needs bert-base-chinese and LLM-Eval a judge model: neither is computed here, so neither "
                "is shown for this run")


def expected_path(lecoqa_dir: str | None) -> Path:
    """The test answers of a LeCoQA checkout (oneal2000/LeCoQA); DataError saying how to get one."""
    if not lecoqa_dir:
        raise DataError("--benchmark lecoqa needs --lecoqa_dir: a checkout of the LeCoQA repository "
                        "(oneal2000/LeCoQA, MIT), whose evaluation/expected.jsonl holds the test answers")
    path = Path(lecoqa_dir) / EXPECTED
    if not path.is_file():
        raise DataError(f"--lecoqa_dir {lecoqa_dir}: no {EXPECTED} there (a checkout of oneal2000/LeCoQA?)")
    return path


def score(questions: list[dict], answers: dict[str, str], output_dir: Path, name: str, extra: dict | None = None,
          store=None) -> dict:
    """LeCoQA's METEOR and BLEU of ``answers`` against the lawyers' answers of ``questions``, and our grounding
    figures (utils/lecoqa/grounding.py; ``store``: the statute store, loaded when None); writes ``scores.json``
    (with per-answer scores) and ``scores.md`` (the published rows, then ours) into ``output_dir``."""
    from utils.legal.statutes import StatuteStore

    scores = score_answers({q["id"]: q["answer"] for q in questions}, answers)
    figures = grounding(questions, answers, store or StatuteStore.load())
    summary = {"benchmark": "lecoqa", "run": name, **(extra or {}), **{m: scores[m] for m in METRICS},
               "n": scores["n"], "grounding": figures, "not_computed": NOT_COMPUTED}
    output_dir.mkdir(parents=True, exist_ok=True)
    _write(output_dir / "scores.json", json.dumps({**summary, "items": scores["items"]}, ensure_ascii=False, indent=1))
    _write(output_dir / "scores.md", table({name: scores}) + "\n" + grounding_table({name: figures}))
    return {**summary, "items": scores["items"]}


def score_file(answers: Path, lecoqa_dir: str | None, output_dir: Path) -> dict:
    """:func:`score` for a file of test answers in LeCoQA's format (``{"id", "answer"}`` per line)."""
    expected_path(lecoqa_dir)  # the checkout is there, or say how to get it
    return score(load_questions(lecoqa_dir, "test"), read_answers(answers), output_dir, Path(answers).stem,
                 {"answers": str(answers)})


def grounding_table(runs: dict[str, dict]) -> str:
    """Markdown: our grounding figures per run (shares as %, the store's coverage of the gold articles)."""
    def pct(x):
        return "–" if x is None else f"{100 * x:.1f}%"

    lines = ["| run | cite ≥ 1 article | citations verified | cite a gold article | outside the store | "
             "gold in store |", "|---|---:|---:|---:|---:|---:|"]
    for name, g in runs.items():
        lines.append(f"| {name} | {pct(g['cite_share'])} | {pct(g['verified_share'])} ({g['citations_in_store']}) | "
                     f"{pct(g['cite_gold_share'])} (of {g['questions_with_gold']}) | {g['outside_store']} | "
                     f"{g['gold_in_store']} of {g['gold_total']} |")
    return "\n".join(lines) + "\n"


def table(ours: dict[str, dict]) -> str:
    """Markdown: the published rows (their figures), then ours (METEOR and BLEU only; "–" where not computed)."""
    lines = ["| model | setup | " + " | ".join(COLUMNS) + " |", "|---|---|" + "---:|" * len(COLUMNS)]
    for run, row in PUBLISHED.items():
        model, setup = run.split("/")
        lines.append(f"| {MODELS[model]} (published) | {SETUPS[setup]} | " + " | ".join(f"{v:.4f}" for v in row) + " |")
    for name, scores in ours.items():
        cells = [f"{scores[c]:.4f}" if c in METRICS else "–" for c in COLUMNS]
        lines.append(f"| {name} (ours) | | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
