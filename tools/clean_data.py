"""Clean instruction data: rule checks, then an LLM judge (the original LaWGPT's "clean with ChatGPT" step).

Rules (always on): malformed or empty fields, too short, repeated text (a character run, a phrase
looping 3+ times, the same line 3+ times), and citations in the instruction or answer to articles
that do not exist in the statute store or belong to a repealed law (``utils/legal/citations.py``). The
case material in ``input`` is not citation-checked: a judgment may rightly cite a law of its time.

Judge (off with ``--no_judge``): the generator backend (``utils/datagen/llm_backends.py``: a local model or an
OpenAI-compatible API) scores each item that passed the rules from 1 to 5 with a fixed rubric; items
under ``--min_score`` are rejected, and so is any reply without one clear score (never kept by
default). Judge replies are appended to a cache as they come (``--judge_cache``), so an interrupted
run resumes without asking again. Kept and rejected files are written atomically at the end; each
rejected record carries its ``reasons``.

    python tools/clean_data.py --input data/sft/self_instruct.jsonl --no_judge            # rules only
    python tools/clean_data.py --input data/sft/self_instruct.jsonl --backend openai --model gpt-4o-mini
    python tools/clean_data.py --input data/sft/si.jsonl --backend local --model_path models/lawgpt-7b \
        --kept_path data/sft/si.clean.jsonl --rejected_path data/sft/si.rejected.jsonl --min_score 4
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
import unicodedata
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tqdm import tqdm  # noqa: E402

from utils.common.datafiles import DataError, read_records, write_jsonl  # noqa: E402
from utils.common.entry import run_entry  # noqa: E402
from utils.common.results_log import ResultsLog, item_key  # noqa: E402
from utils.datagen.llm_backends import add_generator_arguments, generator_from_args  # noqa: E402
from utils.lawbench.metrics import content_chars  # noqa: E402
from utils.legal.citations import check_citations  # noqa: E402
from utils.legal.statutes import StatuteStore  # noqa: E402

RUBRIC = """你是一名严格的法律数据审核员。请评估下面这条用于训练中文法律大模型的指令数据，按1到5分打分：
5分：回答完全正确，引用的法律条文真实、现行有效且与问题相符，表述完整，格式规范；
4分：回答正确，只有轻微的表述或格式问题；
3分：回答基本正确，但有遗漏、不够准确或格式不佳；
2分：回答有明显的法律错误，引用了错误或失效的法条，或者答非所问；
1分：回答错误、无意义、重复或乱码，或者指令本身不是合理的法律任务。
【指令】{instruction}
【输入】{input}
【回答】{output}
请严格按下面的格式输出，不要输出其他内容：
评分：<1到5的整数>
理由：<一句话>"""
RUBRIC_ID = hashlib.sha256(RUBRIC.encode("utf-8")).hexdigest()[:12]
CN_SCORES = {"一": 1, "二": 2, "三": 3, "四": 4, "五": 5}
_KEYWORD_SCORE = re.compile(r"(?:评分|得分|分数|打分|score)\s*(?:为|是)?\s*[:：]?\s*([1-5一二三四五])(?!\d|\.\d)", re.I)
_BARE_SCORE = re.compile(r"^\s*([1-5])\s*(?:分|/\s*5)?\s*[。.]?\s*$")
_LEADING_SCORE = re.compile(r"^\s*([1-5])\s*(?:分|/\s*5)(?!\d|\.\d)")
# Runs that are not repetition: anonymised names (××), ellipses, rules, digits of an amount.
_RUN_EXEMPT = set("×xX*…—-－_=~～.·+|0123456789０１２３４５６７８９ 　\n\t")  # tables in 税法 are drawn with +-|


def parse_score(reply: str) -> int | None:
    """The judge's score 1–5, or None when the reply holds no score or several different ones."""
    text = unicodedata.normalize("NFKC", reply)
    found = {CN_SCORES.get(m, m) for m in _KEYWORD_SCORE.findall(text)}
    found = {int(s) for s in found}
    if len(found) == 1:
        return found.pop()
    if found:
        return None  # "评分：2 … 评分：5": ambiguous, so not a score
    for pattern in (_BARE_SCORE, _LEADING_SCORE):
        m = pattern.match(text)
        if m:
            return int(m.group(1))
    return None


def repetition(text: str) -> str | None:
    """Why ``text`` looks like a generation loop, or None."""
    for m in re.finditer(r"(.)\1{5,}", text):
        if m.group(1) not in _RUN_EXEMPT:
            return f"the character {m.group(1)!r} {len(m.group(0))} times in a row"
    for m in re.finditer(r"(.{2,30}?)\1{2,}", text, re.S):
        unit = m.group(1)
        if len(m.group(0)) >= 9 and any(unicodedata.category(ch)[0] not in "PSZN" for ch in unit):
            return f"{unit.strip()!r} repeated {len(m.group(0)) // len(unit)} times"
    lines = Counter(line.strip() for line in text.splitlines() if len(content_chars(line)) >= 8)
    line, count = lines.most_common(1)[0] if lines else ("", 0)
    if count >= 3 and count * len(line) >= 0.3 * len(text):  # a loop fills the answer; a list may repeat a heading
        return f"the line {line[:30]!r} {count} times"
    return None


def rule_reasons(data: dict, store: StatuteStore, args: argparse.Namespace) -> list[str]:
    reasons = []
    for name, required in (("instruction", True), ("input", False), ("output", True)):
        value = data.get(name)
        if value is None and not required:
            continue
        if not isinstance(value, str):
            reasons.append(f"malformed: field {name!r} is {'missing' if value is None else type(value).__name__}")
        elif required and not value.strip():
            reasons.append(f"empty: {name}")
    if reasons:
        return reasons
    for name, minimum in (("instruction", args.min_instruction_chars), ("output", args.min_output_chars)):
        n = len(content_chars(data[name]))
        if n < minimum:
            reasons.append(f"too_short: {name} has {n} characters (< {minimum})")
    for name in ("instruction", "output"):
        loop = repetition(data[name])
        if loop:
            reasons.append(f"repeated: {name}: {loop}")
    for v in check_citations(data["instruction"] + "\n" + data["output"], store):
        if v.number is None:
            continue  # a law named without an article ("《合同法》已废止") is not a citation to check
        if v.status in ("not_found", "repealed") or (v.status in ("unknown_law", "not_in_store") and args.reject_unknown_laws):
            reasons.append(f"citation_{v.status}: {v.text}: {v.message}")
        elif v.quote_matches is False and args.check_quotes:
            reasons.append(f"citation_quote_mismatch: {v.text}: {v.message}")
    return reasons


def judge_items(items: list[tuple[int, dict]], generator, args: argparse.Namespace) -> dict[int, dict]:
    """Judge replies by item index, asking only for items the cache does not hold yet."""
    model = getattr(generator, "model", None) or "+".join(filter(None, (args.model_path, args.lora_weights)))
    judge_id = f"{generator.name}:{model}:{RUBRIC_ID}"
    keys = {i: item_key(i, d["instruction"], d.get("input") or "", d["output"]) for i, d in items}
    with ResultsLog(args.judge_cache) as cache:
        if cache.dropped_bytes:
            print(f"[clean_data] {args.judge_cache}: dropped an unfinished last line ({cache.dropped_bytes} bytes)")
        other = {r.get("judge") for r in cache.records.values()} - {judge_id}
        if other:
            raise DataError(f"{args.judge_cache}: made by another judge ({', '.join(map(str, other))}); "
                            f"this run is {judge_id} — delete the cache or pass another --judge_cache")
        todo = [(i, d) for i, d in items if keys[i] not in cache]
        print(f"[clean_data] judge {judge_id}: {len(items) - len(todo)} cached, {len(todo)} to ask")
        for start in tqdm(range(0, len(todo), args.judge_batch), desc="judge", unit="batch"):
            chunk = todo[start:start + args.judge_batch]
            prompts = [RUBRIC.format(instruction=d["instruction"], input=d.get("input") or "无", output=d["output"])
                       for _, d in chunk]
            replies = generator.complete(prompts, max_new_tokens=args.judge_max_new_tokens, temperature=0.0)
            for (i, _), reply in zip(chunk, replies):
                cache.append({"key": keys[i], "judge": judge_id, "reply": reply, "score": parse_score(reply)})
        return {i: cache.records[keys[i]] for i, _ in items}


def clean(args: argparse.Namespace, generator=None) -> tuple[list[dict], list[dict]]:
    records = read_records(args.input)
    store = StatuteStore.load()
    reasons = {i: rule_reasons(r.data, store, args) for i, r in enumerate(tqdm(records, desc="rules", unit="item"))}
    verdicts = {}
    if generator is not None:
        verdicts = judge_items([(i, r.data) for i, r in enumerate(records) if not reasons[i]], generator, args)
    kept, rejected = [], []
    for i, record in enumerate(records):
        extra = {}
        if i in verdicts:
            score, reply = verdicts[i]["score"], verdicts[i]["reply"]
            extra = {"judge_score": score, "judge_reply": reply}
            if score is None:
                reasons[i].append(f"judge_unparseable: no single 1-5 score in {reply[:80]!r}")
            elif score < args.min_score:
                reasons[i].append(f"judge_score: {score} < {args.min_score}")
        if reasons[i]:
            rejected.append({**record.data, "reasons": reasons[i], **extra, "where": record.where})
        else:
            kept.append({**record.data, **({"judge_score": extra["judge_score"]} if extra else {})})
    return kept, rejected


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="instruction data (.json array or .jsonl)")
    parser.add_argument("--kept_path", help="default: <input stem>.kept.jsonl next to the input")
    parser.add_argument("--rejected_path", help="default: <input stem>.rejected.jsonl next to the input")
    parser.add_argument("--no_judge", action="store_true", help="rule checks only, no model")
    parser.add_argument("--min_score", type=int, default=4, help="keep items the judge scores at least this (1-5)")
    parser.add_argument("--judge_cache", help="judge replies, appended as they come (default: <kept>.judge_cache.jsonl)")
    parser.add_argument("--judge_batch", type=int, default=8, help="items sent to the judge together")
    parser.add_argument("--judge_max_new_tokens", type=int, default=128)
    parser.add_argument("--min_instruction_chars", type=int, default=4)
    parser.add_argument("--min_output_chars", type=int, default=2)
    parser.add_argument("--reject_unknown_laws", action="store_true",
                        help="also reject citations of laws the store does not hold (regulations, interpretations)")
    parser.add_argument("--check_quotes", action="store_true",
                        help="also reject answers that quote an article with text that does not match it")
    add_generator_arguments(parser, default_template_mode="template")
    args = parser.parse_args(argv)
    stem = Path(args.input).with_suffix("")
    args.kept_path = args.kept_path or f"{stem}.kept.jsonl"
    args.rejected_path = args.rejected_path or f"{stem}.rejected.jsonl"
    args.judge_cache = args.judge_cache or f"{Path(args.kept_path).with_suffix('')}.judge_cache.jsonl"
    if not 1 <= args.min_score <= 5:
        parser.error("--min_score must be in 1..5")
    if args.judge_batch < 1:
        parser.error("--judge_batch must be >= 1")
    if len({str(Path(p).resolve()) for p in (args.input, args.kept_path, args.rejected_path, args.judge_cache)}) < 4:
        parser.error("--input, --kept_path, --rejected_path and --judge_cache must be four different files")
    return args


def main(argv: list[str] | None = None) -> int:
    """The command line: exit status 0, or 1 with one line on stderr (utils/common/entry.py)."""
    return run_entry("clean_data", lambda: _run(argv))


def _run(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    generator = None if args.no_judge else generator_from_args(args)
    kept, rejected = clean(args, generator)
    write_jsonl(args.kept_path, kept)
    write_jsonl(args.rejected_path, rejected)
    counts = Counter(reason.split(":", 1)[0] for r in rejected for reason in r["reasons"])
    print(f"[clean_data] {len(kept) + len(rejected)} items: {len(kept)} kept → {args.kept_path}, "
          f"{len(rejected)} rejected → {args.rejected_path}")
    print("[clean_data] reasons: " + (", ".join(f"{k} {v}" for k, v in counts.most_common()) or "none"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
