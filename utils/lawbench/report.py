"""LawBench reports: scores.json, a Markdown table and a bar chart per run; side-by-side comparisons.

A run directory holds ``scores.json`` (written by ``write_report``): ``{"tasks": [per-task dicts from
utils.lawbench.tasks.TaskScore.as_dict], "average": {...}, "meta": {...}}``. Scores are stored on a 0–1 scale
and shown ×100, as LawBench reports them; the average is the plain mean over the tasks of the run.

    python -m utils.lawbench.report --compare outputs/eval-base outputs/eval-sft --output_dir outputs/compare
    python -m utils.lawbench.report --published ../shared/lawbench --shots 0     # LawBench's published averages
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path

from utils.common.errors import LawgptError

# The published LawBench rows benchmarks/RESULTS.md quotes: results.csv name → display name.
PUBLISHED_MODELS = {
    "lawgpt-7b-beta1.0-hf": "LaWGPT-7B-beta1.0",
    "lawgpt-7b-beta1.1-hf": "LaWGPT-7B-beta1.1",
    "chatlaw-13b-hf": "ChatLaw-13B",
    "fuzi-mingcha-7b-hf": "fuzi.mingcha-7B",
    "GPT-3.5-turbo-0613": "GPT-3.5-turbo",
    "GPT4": "GPT-4",
}
SCORES_FILE = "scores.json"


class ReportError(LawgptError, ValueError):
    """A run directory without scores, or a malformed results file."""


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def average(tasks: list[dict]) -> dict:
    n = len(tasks)
    return {
        "score": sum(t["score"] for t in tasks) / n if n else 0.0,
        "abstention": sum(t["abstention"] for t in tasks) / n if n else 0.0,
        "tasks": n,
        "items": sum(t["n"] for t in tasks),
    }


def markdown_table(tasks: list[dict]) -> str:
    """Task, name, metric, score, abstention, n — plus a contamination column when it was checked."""
    checked = any("contaminated" in t for t in tasks)
    extra = (" contaminated |", "---:|") if checked else ("", "")
    lines = ["| task | name | metric | score | abstention | n |" + extra[0], "|---|---|---|---:|---:|---:|" + extra[1]]
    for t in tasks:
        cell = f" {100 * t['contaminated']:.1f}% |" if "contaminated" in t else (" – |" if checked else "")
        lines.append(f"| {t['task']} | {t['name']} | {t['metric']} | {100 * t['score']:.2f} | "
                     f"{100 * t['abstention']:.1f}% | {t['n']} |" + cell)
    avg = average(tasks)
    lines.append(f"| **average** | {avg['tasks']} tasks | | **{100 * avg['score']:.2f}** | "
                 f"{100 * avg['abstention']:.1f}% | {avg['items']} |" + (" |" if checked else ""))
    return "\n".join(lines) + "\n"


def _save_figure(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.png")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    os.replace(tmp, path)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window (servers and CI have no display)
    import matplotlib.pyplot as plt

    return plt


def grouped_bar_chart(task_ids: list[str], series: dict[str, list[float | None]], path: Path, title: str) -> Path:
    """Bars per task (scores ×100), one colour per series; a missing value leaves a gap."""
    plt = _pyplot()
    width = 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(task_ids) * max(1, len(series)) ** 0.5 + 2), 4))
    for k, (label, values) in enumerate(series.items()):
        xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(task_ids))]
        ax.bar(xs, [100 * v if v is not None else 0 for v in values], width, label=label)
    ax.set_xticks(range(len(task_ids)), task_ids, rotation=45)
    ax.set_ylabel("score (×100)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    if len(series) > 1:
        ax.legend(fontsize=8)
    _save_figure(fig, path)
    plt.close(fig)
    return path


def write_report(run_dir: str | Path, tasks: list[dict], meta: dict | None = None) -> dict:
    """Write scores.json, scores.md and scores.png into ``run_dir``; returns the scores.json content."""
    run_dir = Path(run_dir)
    if not tasks:
        raise ReportError("no task scores to report")
    data = {"tasks": tasks, "average": average(tasks), "meta": meta or {}}
    _write_atomic(run_dir / SCORES_FILE, json.dumps(data, ensure_ascii=False, indent=1) + "\n")
    _write_atomic(run_dir / "scores.md", markdown_table(tasks))
    grouped_bar_chart([t["task"] for t in tasks], {run_dir.name: [t["score"] for t in tasks]},
                      run_dir / "scores.png", f"LawBench — {run_dir.name}")
    return data


def load_scores(run_dir: str | Path) -> dict:
    path = Path(run_dir) / SCORES_FILE
    if not path.is_file():
        raise ReportError(f"{run_dir}: no {SCORES_FILE} (not an evaluation output directory?)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ReportError(f"{path}:{e.lineno}: invalid JSON: {e.msg}") from e
    if not isinstance(data, dict) or not isinstance(data.get("tasks"), list):
        raise ReportError(f"{path}: expected an object with a 'tasks' list")
    return data


def compare(run_dirs: list[str | Path], output_dir: str | Path | None = None, labels: list[str] | None = None) -> str:
    """A table (score, abstention per run) and grouped bars over the union of the runs' tasks."""
    if len(run_dirs) < 1:
        raise ReportError("--compare needs at least one run directory")
    labels = labels or [Path(d).name for d in run_dirs]
    if len(labels) != len(run_dirs) or len(set(labels)) != len(labels):
        raise ReportError(f"need one distinct label per run, got {labels}")
    runs = {label: {t["task"]: t for t in load_scores(d)["tasks"]} for label, d in zip(labels, run_dirs)}
    task_ids = sorted({t for run in runs.values() for t in run}, key=lambda t: tuple(int(x) for x in t.split("-")))
    names = {t: next(run[t]["name"] for run in runs.values() if t in run) for t in task_ids}
    head = "| task | name | " + " | ".join(labels) + " |"
    lines = [head, "|---|---|" + "---:|" * len(labels)]
    for t in task_ids:
        cells = [f"{100 * runs[r][t]['score']:.2f} ({100 * runs[r][t]['abstention']:.0f}%)" if t in runs[r] else "–"
                 for r in labels]
        lines.append(f"| {t} | {names[t]} | " + " | ".join(cells) + " |")
    avgs = [average(list(runs[r].values())) for r in labels]
    lines.append("| **average** | | " + " | ".join(f"**{100 * a['score']:.2f}** ({a['tasks']} tasks)" for a in avgs) + " |")
    table = "\n".join(lines) + "\n\nCells: score ×100 (abstention rate). Averages are over each run's own tasks.\n"
    if output_dir is not None:
        out = Path(output_dir)
        _write_atomic(out / "compare.md", table)
        series = {r: [runs[r][t]["score"] if t in runs[r] else None for t in task_ids] for r in labels}
        grouped_bar_chart(task_ids, series, out / "compare.png", "LawBench — comparison")
    return table


def published_scores(results_csv: str | Path, models: dict[str, str] = PUBLISHED_MODELS) -> list[dict]:
    """Per-model mean score and abstention (×1) over the tasks in LawBench's published results.csv."""
    path = Path(results_csv)
    if not path.is_file():
        raise ReportError(f"{path}: no such file (LawBench's predictions/<shots>/results.csv)")
    rows: dict[str, list[tuple[float, float]]] = {}
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        if not {"task", "model_name", "score", "abstention_rate"} <= set(reader.fieldnames or []):
            raise ReportError(f"{path}: expected columns task, model_name, score, abstention_rate")
        for line, row in enumerate(reader, start=2):
            try:
                rows.setdefault(row["model_name"], []).append((float(row["score"]), float(row["abstention_rate"])))
            except ValueError as e:
                raise ReportError(f"{path}:{line}: {e}") from e
    out = []
    for key, label in models.items():
        if key not in rows:
            raise ReportError(f"{path}: no rows for model {key!r}")
        values = rows[key]
        out.append({"model": label, "model_name": key, "tasks": len(values),
                    "score": sum(s for s, _ in values) / len(values),
                    "abstention": sum(a for _, a in values) / len(values)})
    return out


def published_table(results_csv: str | Path, models: dict[str, str] = PUBLISHED_MODELS) -> str:
    lines = ["| model (LawBench, published) | tasks | average score | mean abstention |", "|---|---:|---:|---:|"]
    for r in published_scores(results_csv, models):
        lines.append(f"| {r['model']} | {r['tasks']} | {100 * r['score']:.2f} | {100 * r['abstention']:.1f}% |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compare", nargs="+", metavar="RUN_DIR", help="evaluation output directories to put side by side")
    parser.add_argument("--labels", nargs="+", help="column names for --compare (default: directory names)")
    parser.add_argument("--output_dir", help="where --compare writes compare.md and compare.png")
    parser.add_argument("--published", metavar="LAWBENCH_DIR", help="print LawBench's published averages from its results.csv")
    parser.add_argument("--shots", type=int, choices=(0, 1), default=0)
    args = parser.parse_args(argv)
    if not args.compare and not args.published:
        parser.error("give --compare RUN_DIR ... and/or --published LAWBENCH_DIR")
    if args.published:
        shots = "zero_shot" if args.shots == 0 else "one_shot"
        print(published_table(Path(args.published) / "predictions" / shots / "results.csv"))
    if args.compare:
        print(compare(args.compare, args.output_dir, args.labels))


if __name__ == "__main__":
    try:
        main()
    except (ReportError, OSError) as e:
        print(f"report: error: {e}", file=sys.stderr)
        sys.exit(1)
