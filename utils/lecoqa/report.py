"""Scoring a file of LeCoQA answers without a model: their metrics, beside the published rows (evaluate.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from utils.common.datafiles import DataError
from utils.lecoqa.metrics import METRICS, read_answers, score_answers
from utils.lecoqa.published import COLUMNS, MODELS, PUBLISHED, SETUPS

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


def score_file(answers: Path, lecoqa_dir: str | None, output_dir: Path) -> dict:
    """METEOR and BLEU of ``answers`` (their JSONL: ``{"id", "answer"}``) against the test answers; writes
    ``scores.json`` and ``scores.md`` into ``output_dir`` and returns the scores (``items`` per answer)."""
    scores = score_answers(read_answers(expected_path(lecoqa_dir)), read_answers(answers))
    output_dir.mkdir(parents=True, exist_ok=True)
    summary = {"benchmark": "lecoqa", "answers": str(answers), **{m: scores[m] for m in METRICS}, "n": scores["n"],
               "not_computed": NOT_COMPUTED}
    _write(output_dir / "scores.json", json.dumps({**summary, "items": scores["items"]}, ensure_ascii=False, indent=1))
    _write(output_dir / "scores.md", table({Path(answers).stem: scores}))
    return {**summary, "items": scores["items"]}


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
