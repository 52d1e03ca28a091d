"""Memory and time of the pretraining data path: the in-memory lists it replaced vs the datasets path, one run.

    TOKENIZERS_PARALLELISM=false python benchmarks/bench_data_path.py --tokenizer outputs/demo-gguf/tokenizer \
        --tokens 10e6 50e6
    python benchmarks/bench_data_path.py --tokens 10e6 --modes old new-1 new-2 --rounds 2

The first tokenises in one thread per process (so 2 workers are 2 threads); the second lets the tokenizers library
use its own threads (its default, as in training: a batch is encoded on every core).

Corpus: data/pretrain/statutes.jsonl (tools/build_corpus.py) repeated to about each ``--tokens`` count under the
tokenizer (one .jsonl file in a temporary folder). Each measurement is a fresh child process that loads the tokenizer,
notes its memory, then prepares the training blocks (``--block_size``) one way:

- ``old``: the code of commit 7092054 (read out of git): load_documents → tokenize_documents → pack_blocks →
  train_clm's blocks_dataset (Python lists in the process);
- ``new-1`` / ``new-2``: utils/train_data.build_clm with 1 / 2 tokenising processes into an empty cache;
- ``reuse``: build_clm again on the cache ``new-1`` wrote (open, plus 1,000 random blocks read);
- ``stream``: utils/streaming.streaming_blocks (shuffle buffer 10,000 blocks), one whole pass.

Memory is sampled every 0.1 s from /proc/<pid>/smaps_rollup over the child and its worker processes: PSS (pages
shared by forked workers counted once; memory-mapped Arrow pages included) and its anonymous part (what is not a
file's page cache), from the moment the child has loaded the tokenizer to its exit. Reported: that peak minus the
child's own memory at that moment, also per corpus token; and the kernel's peak RSS of the child's main process
(VmHWM, reset at that moment through /proc/self/clear_refs; it misses no short peak, but counts no worker). Time is the
data step alone, wall clock. Modes run in turn, ``--rounds`` times for the smallest size (the machine may be shared:
compare ratios within one run). A size whose old path would need more than half the free memory skips ``old``.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

OLD_REV = "7092054"  # the last commit with the in-memory path
OLD_BYTES_PER_TOKEN = 150  # for the memory guard (measured: 148-149)


# ---------------------------------------------------------------- child: one measurement


def _smaps(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                out[parts[0].rstrip(":")] = int(parts[1]) * 1024
    return out


def _old_path():
    """utils/common/datafiles.py and train_clm.blocks_dataset as of OLD_REV, as a module."""
    def show(path):
        return subprocess.run(["git", "show", f"{OLD_REV}:{path}"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout

    module = sys.modules["old_data"] = types.ModuleType("old_data")
    exec(compile(show("utils/common/datafiles.py"), f"{OLD_REV}:utils/common/datafiles.py", "exec"), module.__dict__)
    source = show("train_clm.py")
    fn = next(n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef) and n.name == "blocks_dataset")
    exec(compile(ast.get_source_segment(source, fn), f"{OLD_REV}:train_clm.py", "exec"), module.__dict__)
    return module


def child(args) -> None:
    import datasets  # noqa: F401  what train_clm.py has imported before its data step, whichever path

    import utils.training.setup  # noqa: F401
    import utils.training.streamed_blocks  # noqa: F401
    import utils.training.tokenized_data  # noqa: F401
    from utils.model.loader import load_tokenizer

    tokenizer = load_tokenizer(args.tokenizer)
    files = [Path(args.corpus)]
    old = _old_path() if args.mode == "old" else None
    base = _smaps(os.getpid())
    with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
        f.write("5")  # the kernel's peak RSS (VmHWM) restarts from the current RSS
    Path(args.started).touch()  # the parent's peak starts here (loading the tokenizer peaks higher than it stays)
    start = time.perf_counter()
    if old is not None:
        docs = [d for f in files for d in old.load_documents(f)]
        blocks = old.pack_blocks(old.tokenize_documents(tokenizer, docs), args.block_size)
        data = old.blocks_dataset(blocks)
        tokens, count = sum(len(b["input_ids"]) for b in data), len(data)
    elif args.mode == "stream":
        from utils.training.streamed_blocks import streaming_blocks

        stream, _, _ = streaming_blocks(files, tokenizer, args.block_size, True, 0, 0, 1, 10000, 256 << 20)
        tokens = count = 0
        for row in stream:
            tokens += len(row["input_ids"])
            count += 1
    else:
        from utils.common.datafiles import file_digests
        from utils.training.tokenized_data import PipelineArguments, build_clm

        pipeline = PipelineArguments(preprocessing_num_workers=2 if args.mode == "new-2" else 1,
                                     dataset_cache_dir=args.cache)
        built = build_clm(files, file_digests(files)[1], tokenizer, args.block_size, True, 0, 0, pipeline)
        assert built.reused == (args.mode == "reuse"), (args.mode, built.reused)
        rng = random.Random(0)
        for i in (rng.randrange(len(built.train)) for _ in range(1000 if args.mode == "reuse" else 0)):
            built.train[i]
        tokens, count = built.meta["train_tokens"], built.meta["train_blocks"]
    seconds = time.perf_counter() - start
    hwm = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status", encoding="ascii")
               if line.startswith("VmHWM:"))
    print(json.dumps({"base_pss": base["Pss"], "base_anon": base["Pss_Anon"], "base_rss": base["Rss"],
                      "peak_rss_main": hwm, "seconds": seconds, "tokens": tokens, "blocks": count}), flush=True)


# ---------------------------------------------------------------- parent


def measure(args, mode: str, corpus: Path, cache: Path) -> dict:
    import psutil

    started = cache.parent / f".started-{mode}"
    started.unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "--child", mode, "--corpus", str(corpus), "--cache", str(cache),
           "--tokenizer", args.tokenizer, "--block_size", str(args.block_size), "--started", str(started)]
    env = {**os.environ, "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}  # TOKENIZERS_PARALLELISM as the caller set it
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peak = {"Pss": 0, "Pss_Anon": 0}
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        if not started.exists():
            time.sleep(0.05)
            continue
        total = {"Pss": 0, "Pss_Anon": 0}
        try:
            pids = [root.pid] + [c.pid for c in root.children(recursive=True)]
        except psutil.NoSuchProcess:
            break
        for pid in pids:
            try:
                sample = _smaps(pid)
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue
            for key in total:
                total[key] += sample.get(key, 0)
        for key in peak:
            peak[key] = max(peak[key], total[key])
        time.sleep(0.1)
    out, err = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"{mode} failed:\n{err[-3000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    result.update(mode=mode, peak_pss=peak["Pss"], peak_anon=peak["Pss_Anon"])
    return result


def write_corpus(path: Path, tokenizer_dir: str, source: Path, tokens: float) -> None:
    """``source`` repeated until about ``tokens`` tokens (estimated from its first 2,000 lines)."""
    from utils.model.loader import load_tokenizer

    lines = source.read_text(encoding="utf-8").splitlines(keepends=True)
    sample = [json.loads(line)["content"] for line in lines[:2000]]
    tokenizer = load_tokenizer(tokenizer_dir)
    per_byte = sum(len(ids) + 1 for ids in tokenizer(sample).input_ids) / sum(len(line.encode()) for line in lines[:2000])
    need = int(tokens / per_byte)
    with open(path, "w", encoding="utf-8") as f:
        written = 0
        while written < need:
            for line in lines:
                f.write(line)
                written += len(line.encode())
                if written >= need:
                    break


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokenizer", default=str(ROOT / "outputs" / "demo-gguf" / "tokenizer"))
    p.add_argument("--source", default=str(ROOT / "data" / "pretrain" / "statutes.jsonl"))
    p.add_argument("--tokens", type=float, nargs="+", default=[10e6, 50e6], help="corpus sizes in tokens")
    p.add_argument("--block_size", type=int, default=512)
    p.add_argument("--rounds", type=int, default=2, help="turns of every mode at the smallest size")
    p.add_argument("--modes", nargs="+", default=["old", "new-1", "new-2", "reuse", "stream"])
    p.add_argument("--work", help="folder for corpora and caches (default: a temporary one, removed)")
    p.add_argument("--json", help="write every measurement here")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--corpus", help=argparse.SUPPRESS)
    p.add_argument("--cache", help=argparse.SUPPRESS)
    p.add_argument("--started", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        args.mode = args.child
        return child(args)

    import psutil

    work = Path(args.work or tempfile.mkdtemp(prefix="bench-data-path-"))
    results = []
    try:
        for n, tokens in enumerate(sorted(args.tokens)):
            corpus = work / f"corpus-{int(tokens)}.jsonl"
            write_corpus(corpus, args.tokenizer, Path(args.source), tokens)
            for round_ in range(args.rounds if n == 0 else 1):
                cache = work / f"cache-{int(tokens)}-{round_}"
                for mode in args.modes:
                    if mode == "old" and OLD_BYTES_PER_TOKEN * tokens > psutil.virtual_memory().available / 2:
                        print(f"{int(tokens):,} tokens: old path skipped (would need ~{OLD_BYTES_PER_TOKEN * tokens / 1e9:.0f}"
                              f" GB, {psutil.virtual_memory().available / 1e9:.0f} GB free)", file=sys.stderr)
                        continue
                    r = measure(args, mode, corpus, cache.with_name(cache.name + "-2") if mode == "new-2" else cache)
                    r.update(size=tokens, round=round_, corpus_bytes=corpus.stat().st_size,
                             cache_bytes=sum(f.stat().st_size for f in work.glob("cache-*/**/*") if f.is_file()))
                    results.append(r)
                    print(json.dumps(r), file=sys.stderr, flush=True)
                shutil.rmtree(cache, ignore_errors=True)
                shutil.rmtree(cache.with_name(cache.name + "-2"), ignore_errors=True)
            corpus.unlink()
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1), encoding="utf-8")
    report(results)


def _paired(rows: list[dict], mode: str, base: str) -> str:
    """base's time / mode's time in each round (the two ran one after the other)."""
    ratios = [b["seconds"] / r["seconds"] for r in rows if r["mode"] == mode
              for b in rows if b["mode"] == base and b["round"] == r["round"]]
    return " / ".join(f"{x:.2f}x" for x in ratios) or "–"


def report(results: list[dict]) -> None:
    print("| corpus tokens | path | wall s (data step) | speed vs old | peak PSS beyond start | per token | "
          "anonymous beyond start | per token | main process peak RSS beyond start (kernel) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for size in sorted({r["size"] for r in results}):
        rows = [r for r in results if r["size"] == size]
        for mode in dict.fromkeys(r["mode"] for r in rows):
            group = [r for r in rows if r["mode"] == mode]
            pss = max(r["peak_pss"] - r["base_pss"] for r in group)
            anon = max(r["peak_anon"] - r["base_anon"] for r in group)
            hwm = max(r["peak_rss_main"] - r["base_rss"] for r in group)
            tokens, seconds = group[0]["tokens"], " / ".join(f"{r['seconds']:.1f}" for r in group)
            print(f"| {tokens:,} | {mode} | {seconds} | "
                  f"{_paired(rows, mode, 'old') if mode != 'old' else '1'} | {pss / 1e6:,.0f} MB | {pss / tokens:.1f} B | "
                  f"{anon / 1e6:,.0f} MB | {anon / tokens:.1f} B | {hwm / 1e6:,.0f} MB |")
    print()
    for size in sorted({r["size"] for r in results}):
        rows = [r for r in results if r["size"] == size]
        if any(r["mode"] == "new-2" for r in rows):
            print(f"{int(size):,} tokens, 2 tokenising workers vs 1 (speed, per round): {_paired(rows, 'new-2', 'new-1')}")


if __name__ == "__main__":
    main()
