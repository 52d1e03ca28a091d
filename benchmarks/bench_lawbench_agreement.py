"""Does our LawBench scorer reproduce LawBench's published results? Score raw predictions, compare with results.csv.

    # the five prediction sets handed to us (../shared/lawbench/raw_predictions/*/*.tar.xz), every task listed
    python benchmarks/bench_lawbench_agreement.py --lawbench_dir ../shared/lawbench --table
    # every model folder of a LawBench checkout (git clone https://github.com/open-compass/LawBench)
    python benchmarks/bench_lawbench_agreement.py --predictions LawBench/predictions/zero_shot LawBench/predictions/one_shot

Each folder given to --predictions is LawBench's predictions/<shots>/ layout: one folder of <task>.json per model
and results.csv beside them (--results_csv overrides). For every model × task with raw predictions: our score
and abstention (utils/lawbench/tasks.py, the scorer evaluate.py uses) against the published ones. Prints the pairs
within --tolerance, every pair outside it, and with --table the whole table (scores ×100). Exit status 1 when a
pair is outside the tolerance. --leaderboard: per model, our average next to the published one.
"""

import argparse
import csv
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from utils.lawbench import tasks as L  # noqa: E402


def read_results(path: Path) -> dict[tuple[str, str], tuple[float, float]]:
    with open(path, encoding="utf-8", newline="") as f:
        return {(r["model_name"], r["task"]): (float(r["score"]), float(r["abstention_rate"])) for r in csv.DictReader(f)}


def proofreading_available() -> bool:
    try:
        import utils.lawbench.proofreading  # noqa: F401
    except ModuleNotFoundError:
        return False
    return True


def runs_from_archives(lawbench_dir: Path, workdir: Path) -> list[tuple[str, Path, Path]]:
    """(label, model folder, results.csv) for each archive under lawbench_dir/raw_predictions, unpacked."""
    runs = []
    for archive in sorted((lawbench_dir / "raw_predictions").glob("*/*.tar.xz")):
        shots = archive.parent.name
        with tarfile.open(archive) as tar:
            tar.extractall(workdir / shots, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
        model = archive.name.removesuffix(".tar.xz")
        runs.append((f"{shots}/{model}", workdir / shots / model, lawbench_dir / "predictions" / shots / "results.csv"))
    if not runs:
        sys.exit(f"bench_lawbench_agreement: no archives under {lawbench_dir / 'raw_predictions'}")
    return runs


def runs_from_folders(folders: list[Path], results_csv: Path | None) -> list[tuple[str, Path, Path]]:
    runs = []
    for folder in folders:
        csv_path = results_csv or folder / "results.csv"
        for model in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
            runs.append((f"{folder.name}/{model.name}", model, csv_path))
    return runs


def compare(runs, tolerance: float, models: set[str] | None,
            only_tasks: set[str] | None = None) -> tuple[list[dict], list[str]]:
    rows, notes = [], []
    with_proofreading = proofreading_available()
    if not with_proofreading:
        notes.append("2-1 not scored: utils/lawbench/proofreading.py is not in this checkout")
    published_by_csv: dict[Path, dict] = {}
    for label, folder, csv_path in runs:
        model = folder.name
        if models and model not in models:
            continue
        published = published_by_csv.setdefault(csv_path, read_results(csv_path))
        tasks = [t for t in L.raw_tasks(folder) if (with_proofreading or t != "2-1")
                 and (not only_tasks or t in only_tasks)]
        unpublished = [t for t in tasks if (model, t) not in published]
        if unpublished:
            notes.append(f"{label}: no published row for {', '.join(unpublished)}")
        start = time.perf_counter()
        for result, _ in L.score_raw_folder(folder, [t for t in tasks if t not in unpublished]):
            score, abstention = published[(model, result.task)]
            rows.append({"run": label, "task": result.task, "score": result.score, "published": score,
                         "abstention": result.abstention, "published_abstention": abstention,
                         "d_score": result.score - score, "d_abstention": result.abstention - abstention,
                         "ok": abs(result.score - score) <= tolerance and abs(result.abstention - abstention) <= tolerance})
        print(f"[agreement] {label}: {len(tasks) - len(unpublished)} tasks in {time.perf_counter() - start:.1f} s",
              file=sys.stderr)
    return rows, notes


def table(rows: list[dict]) -> str:
    lines = ["| run | task | ours | published | Δ score | abstention ours | published | Δ abstention |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['task']} | {100 * r['score']:.2f} | {100 * r['published']:.2f} | "
                     f"{r['d_score']:+.1e} | {100 * r['abstention']:.1f}% | {100 * r['published_abstention']:.1f}% | "
                     f"{r['d_abstention']:+.1e} |")
    return "\n".join(lines) + "\n"


def mean(values: list[float]) -> float:
    return 100 * sum(values) / len(values)


def leaderboard(rows: list[dict], runs) -> str:
    """Per model run: our mean over the tasks scored here next to the published mean over the same tasks,
    and the published mean over all of its tasks in results.csv (20: LawBench's leaderboard figure)."""
    csv_of = {label: csv_path for label, _, csv_path in runs}
    lines = ["| model run | tasks scored | ours | published, same tasks | published, all tasks | "
             "abstention ours | published |", "|---|---:|---:|---:|---:|---:|---:|"]
    for label in dict.fromkeys(r["run"] for r in rows):
        mine = [r for r in rows if r["run"] == label]
        everything = [v for (m, _), v in read_results(csv_of[label]).items() if m == label.split("/", 1)[1]]
        lines.append(f"| {label} | {len(mine)} | {mean([r['score'] for r in mine]):.2f} | "
                     f"{mean([r['published'] for r in mine]):.2f} | {mean([s for s, _ in everything]):.2f} "
                     f"({len(everything)}) | {mean([r['abstention'] for r in mine]):.1f}% | "
                     f"{mean([r['published_abstention'] for r in mine]):.1f}% |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--lawbench_dir", type=Path, help="folder with raw_predictions/*/*.tar.xz and predictions/*/results.csv")
    source.add_argument("--predictions", type=Path, nargs="+", help="LawBench predictions/<shots> folders (model folders)")
    p.add_argument("--results_csv", type=Path, help="published scores (default: results.csv in each --predictions folder)")
    p.add_argument("--models", nargs="+", help="only these model folders")
    p.add_argument("--tasks", help="only these tasks, e.g. 2-1 or 3-4,3-5 (default: every task with predictions)")
    p.add_argument("--tolerance", type=float, default=0.001)
    p.add_argument("--table", action="store_true", help="print every model × task row, not only the disagreements")
    p.add_argument("--leaderboard", action="store_true", help="print per-model averages, ours next to the published")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lawbench-agreement-") as workdir:
        runs = (runs_from_archives(args.lawbench_dir, Path(workdir)) if args.lawbench_dir
                else runs_from_folders(args.predictions, args.results_csv))
        only = set(L.resolve_tasks(args.tasks)) if args.tasks else None  # unknown ids stop here
        rows, notes = compare(runs, args.tolerance, set(args.models) if args.models else None, only)
    if args.table:
        print(table(rows))
    if args.leaderboard:
        print(leaderboard(rows, runs))
    off = [r for r in rows if not r["ok"]]
    worst = max((max(abs(r["d_score"]), abs(r["d_abstention"])) for r in rows), default=0.0)
    print(f"{len(rows) - len(off)} of {len(rows)} model × task pairs within {args.tolerance} "
          f"({len({r['run'] for r in rows})} model runs; largest difference {worst:.1e})")
    if off:
        print("outside the tolerance:\n" + table(off))
    for note in notes:
        print(f"note: {note}")
    return 1 if off else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except L.LawBenchError as e:
        sys.exit(f"bench_lawbench_agreement: error: {e}")
