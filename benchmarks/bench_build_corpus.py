"""Peak memory and time of ``tools/build_corpus.py --judgments`` on many large JSONL files, old vs new, one run.

    python benchmarks/bench_build_corpus.py --mb 50 200

Judgments are synthetic: the documents of data/pretrain/statutes.jsonl, each under a distinct case number
(「（2020）京01民初123号」), every tenth one written twice; ``--files`` files of about ``--mb``/files MB each. The
script of commit 7092054 (read out of git: load_documents of each whole file, a set of 20-byte SHA-1 digests) and
the current one (line by line, 8-byte hashes) run in turn as fresh processes; peak RSS is the kernel's (wait4).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OLD_REV = "7092054"


def write_judgments(folder: Path, source: Path, mb: float, files: int) -> int:
    docs = [json.loads(line)["content"] for line in source.read_text(encoding="utf-8").splitlines()]
    folder.mkdir(parents=True)
    per_file, n = mb * 1e6 / files, 0
    for k in range(files):
        with open(folder / f"part{k:03d}.jsonl", "w", encoding="utf-8") as f:
            while f.tell() < per_file:
                line = json.dumps({"content": f"（2020）京01民初{n}号\n{docs[n % len(docs)]}"}, ensure_ascii=False) + "\n"
                f.write(line + (line if n % 10 == 0 else ""))
                n += 1
    return n


def run(script: Path, judgments: Path, out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}
    log = out.with_suffix(".log")
    start = time.perf_counter()
    with open(log, "wb") as f:  # files, not pipes: a full pipe would stall the child
        proc = subprocess.Popen([sys.executable, str(script), "--no_statutes", "--judgments", str(judgments),
                                 "--output_dir", str(out)], stdout=f, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    stdout = log.read_text(encoding="utf-8", errors="replace")
    if status:
        raise SystemExit(f"{script} failed: {stdout[-2000:]}")
    return {"seconds": seconds, "peak_rss": usage.ru_maxrss * 1024, "summary": [line for line in stdout.splitlines() if "records read" in line][-1].strip()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mb", type=float, nargs="+", default=[50, 200], help="corpus sizes in MB")
    p.add_argument("--files", type=int, default=8)
    p.add_argument("--source", default=str(ROOT / "data" / "pretrain" / "statutes.jsonl"))
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-build-corpus-"))
    try:
        old = work / "old" / "tools" / "build_corpus.py"  # ROOT of the old script = work/old; utils from PYTHONPATH
        old.parent.mkdir(parents=True)
        old.write_text(subprocess.run(["git", "show", f"{OLD_REV}:tools/build_corpus.py"], cwd=ROOT, check=True,
                                      capture_output=True, text=True).stdout, encoding="utf-8")
        print("| judgments | distinct records | path | wall s | peak RSS | output |")
        print("|---|---|---|---|---|---|")
        for mb in args.mb:
            folder = work / f"judgments-{mb:g}"
            records = write_judgments(folder, Path(args.source), mb, args.files)
            for name, script in (("old", old), ("new", ROOT / "tools" / "build_corpus.py")):
                r = run(script, folder, work / f"out-{name}")
                print(f"| {mb:g} MB in {args.files} files | {records:,} | {name} | {r['seconds']:.1f} | "
                      f"{r['peak_rss'] / 1e6:,.0f} MB | {r['summary']} |", flush=True)
            shutil.rmtree(folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
