"""LeCoQA scores of a set of answers (a file, or a model's run): their metrics beside the published rows, our
grounding figures, and a chart (evaluate.py --benchmark lecoqa).

METEOR and BLEU are always computed (utils/lecoqa/metrics.py); BERTScore when the user gives a local
bert-base-chinese (utils/lecoqa/bertscore.py); LLM-Eval never — its prompt is unpublished — but a judge of ours can
rate the answers (utils/lecoqa/judge.py), shown in a column of its own."""

from __future__ import annotations

import json
import os
from pathlib import Path

from utils.common.datafiles import DataError
from utils.lecoqa.bertscore import bertscore
from utils.lecoqa.grounding import grounding
from utils.lecoqa.judge import judge_answers
from utils.lecoqa.metrics import METRICS, read_answers, score_answers
from utils.lecoqa.published import COLUMNS, MODELS, PUBLISHED, SETUPS, published
from utils.lecoqa.questions import load_questions

EXPECTED = Path("evaluation") / "expected.jsonl"  # the lawyers' answers to the 309 test questions, in a LeCoQA checkout
NO_BERTSCORE = "BERTScore not computed (give --bertscore_model, a local copy of bert-base-chinese)"
NO_LLM_EVAL = "LLM-Eval not computed (LeCoQA's judge prompt is unpublished; --judge_api_base rates with ours)"
NOT_COMPUTED = f"{NO_BERTSCORE}; {NO_LLM_EVAL}"  # what a run without either option leaves out


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
          store=None, bertscore_model: str | None = None, judge: tuple | None = None) -> dict:
    """LeCoQA's METEOR and BLEU of ``answers`` against the lawyers' answers of ``questions``, BERTScore with
    ``bertscore_model`` (a local bert-base-chinese), the share ``judge`` — ``(generator, judge_id)``, see
    utils/lecoqa/judge.py — finds correct, and our grounding figures (utils/lecoqa/grounding.py; ``store``: the
    statute store, loaded when None); writes ``scores.json`` (with per-answer scores), ``scores.md`` (the published
    rows, then ours) and ``scores.png`` into ``output_dir``."""
    from utils.legal.statutes import StatuteStore

    expected = {q["id"]: q["answer"] for q in questions}
    scores = score_answers(expected, answers)
    figures = grounding(questions, answers, store or StatuteStore.load())
    summary = {"benchmark": "lecoqa", "run": name, **(extra or {}), **{m: scores[m] for m in METRICS},
               "n": scores["n"], "grounding": figures}
    not_computed = [NO_LLM_EVAL]
    if bertscore_model:
        bert = bertscore(expected, answers, bertscore_model)
        summary.update(BERTScore=bert["BERTScore"], bertscore={"model": bert["model"], "comparable": bert["comparable"]})
        for key, value in bert["items"].items():
            scores["items"][key]["BERTScore"] = value
    else:
        not_computed.insert(0, NO_BERTSCORE)
    output_dir.mkdir(parents=True, exist_ok=True)
    if judge:
        summary["judge"] = judge_answers(questions, answers, *judge, output_dir)
    summary["not_computed"] = "; ".join(not_computed)
    _write(output_dir / "scores.json", json.dumps({**summary, "items": scores["items"]}, ensure_ascii=False, indent=1))
    _write(output_dir / "scores.md", table({name: summary}) + "\n" + grounding_table({name: figures}))
    chart({name: summary}, output_dir / "scores.png")
    return {**summary, "items": scores["items"]}


def score_file(answers: Path, lecoqa_dir: str | None, output_dir: Path, **options) -> dict:
    """:func:`score` for a file of test answers in LeCoQA's format (``{"id", "answer"}`` per line); ``options``:
    those of :func:`score` (bertscore_model, judge)."""
    expected_path(lecoqa_dir)  # the checkout is there, or say how to get it
    return score(load_questions(lecoqa_dir, "test"), read_answers(answers), output_dir, Path(answers).stem,
                 {"answers": str(answers)}, **options)


def grounding_table(runs: dict[str, dict]) -> str:
    """Markdown: our grounding figures per run (shares as %, the store's coverage of the gold articles)."""
    def pct(x):
        return "–" if x is None else f"{100 * x:.1f}%"

    lines = ["| run | cite ≥ 1 article | citations: article exists | confirmed (exists, faithful, fits) | "
             "cite a gold article | outside the store | gold in store |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, g in runs.items():
        lines.append(f"| {name} | {pct(g['cite_share'])} | {pct(g['verified_share'])} ({g['citations_in_store']}) | "
                     f"{pct(g.get('confirmed_share'))} | "
                     f"{pct(g['cite_gold_share'])} (of {g['questions_with_gold']}) | {g['outside_store']} | "
                     f"{g['gold_in_store']} of {g['gold_total']} |")
    return "\n".join(lines) + "\n"


def table(ours: dict[str, dict]) -> str:
    """Markdown: the published rows (their figures), then ours: METEOR and BLEU, BERTScore where it was computed
    with bert-base-chinese's shape, never LLM-Eval ("–"); notes below for a judge's figure or another BERT."""
    lines = ["| model | setup | " + " | ".join(COLUMNS) + " |", "|---|---|" + "---:|" * len(COLUMNS)]
    for run, row in PUBLISHED.items():
        model, setup = run.split("/")
        lines.append(f"| {MODELS[model]} (published) | {SETUPS[setup]} | " + " | ".join(f"{v:.4f}" for v in row) + " |")
    notes = []
    for name, summary in ours.items():
        values = dict(summary)
        if "BERTScore" in values and not values["bertscore"]["comparable"]:
            notes.append(f"{name}: BERTScore {values.pop('BERTScore'):.4f} with {values['bertscore']['model']}, which "
                         "is not bert-base-chinese: not comparable with the published column")
        if values.get("judge"):
            j = values["judge"]
            share = "–" if j["correct_share"] is None else f"{100 * j['correct_share']:.1f}%"
            notes.append(f"{name}: judged correct by {j['judge']} with our prompt (not LeCoQA's LLM-Eval): {share} "
                         f"of {j['judged']} ({j['unclear']} replies unclear)")
        cells = [f"{values[c]:.4f}" if isinstance(values.get(c), float) else "–"
                 for c in ("LLM-Eval", "METEOR", "BERTScore", "BLEU")]
        lines.append(f"| {name} (ours) | | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n" + "".join(f"\n- {note}" for note in notes) + ("\n" if notes else "")


def chart(ours: dict[str, dict], path: Path) -> Path:
    """Bars of METEOR and BLEU (×100): every published run, then ours (utils/lawbench/report.py's chart)."""
    from utils.lawbench.report import grouped_bar_chart

    runs = [f"{MODELS[r.split('/')[0]]} {SETUPS[r.split('/')[1]]}" for r in PUBLISHED] + [f"{n} (ours)" for n in ours]
    series = {m: [published(r, m) for r in PUBLISHED] + [s[m] for s in ours.values()] for m in METRICS}
    return grouped_bar_chart(runs, series, path, "LeCoQA test: published runs and ours")


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
