"""How good are a model's answers as answers? Rates infer.py output files (JSONL) side by side.

    # held-out questions with gold citations -> an infer.py data file (40 = 10 from each test split)
    python benchmarks/bench_answers.py questions --output outputs/answers/heldout.jsonl
    python infer.py --base_model models/lawgpt-demo --infer_data_path outputs/answers/heldout.jsonl \\
        --output_path outputs/answers/demo_rag.jsonl --rag --max_new_tokens 256
    python benchmarks/bench_answers.py rate outputs/answers/demo_rag.jsonl outputs/answers/before_rag.jsonl \\
        --labels after before --questions outputs/answers/heldout.jsonl --tokenizer models/lawgpt-demo models/before

What each figure means (every share is over the answers of one file, n stated):

- **ends**: the answer ended by itself — ``finish_reason`` ``eos`` (the model's end token) or ``stop`` (a
  next-turn marker of the template) — rather than running into ``--max_new_tokens`` (``length``).
- **loops**: the text repeats itself — (a) a span of at least ``LOOP_SPAN`` (6) characters said twice back to
  back (「酒驾撞人，可以判刑，但是，酒驾撞人，可以判刑，但是」), or a span of 1–5 characters said
  ``LOOP_SHORT_TIMES`` (4) times back to back (「，，，，」, 「罚罚罚罚」); whitespace is ignored — or (b) one
  sentence (split at 。！？；and newlines, at least 4 characters) said 3 times anywhere in the answer.
- **cites**: at least one citation of an article (utils/legal/citations.py; a law named without an article is not one).
- **citations: the article exists**: over all article citations in the file, the share the statute store holds in
  force (``verified``); the rest are ``not_found``, ``repealed``, ``unknown_law``. **confirmed**: of the same, those
  that also quote faithfully (if quoted) and fit the question (utils/legal/rag.judge_relevance with today's ``--rag``
  retriever, so files rated together are judged alike).
- **quotes similar / faithful**: of the citations whose article is quoted beside them, the share whose quote reaches
  the checker's character similarity (``QUOTE_THRESHOLD``), and the share that also keeps every number of the article
  (``quote_matches``: utils/legal/citations.py ``numbers_kept``).
- **gold cited**: for questions with gold citations (``--questions``, e.g. resources/retrieval_questions.jsonl),
  the share whose answer cites a gold article (verified, same law, number and 之N). **gold retrieved**: the
  share whose ``--rag`` articles hold a gold article — retrieval's recall@k, an upper bound for a model that
  cites from the retrieved articles.
- **new-token rate**: with ``--tokenizer`` (each file's model directory) and records carrying ``answer_ids`` (infer.py writes
  them): the share of generated ids >= the base vocabulary size (``--base_vocab_size``, else ``base_rows``
  from the run_info.json chain of the model), against the share of new tokens in reference text tokenised
  with the same tokenizer: the file's references when it has them, else the ``--rag`` articles it retrieved.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from utils.common.datafiles import DataError, read_records, write_jsonl  # noqa: E402
from utils.legal.citations import QUOTE_THRESHOLD, check_citations  # noqa: E402
from utils.legal.rag import judge_relevance  # noqa: E402
from utils.legal.statutes import StatuteStore  # noqa: E402

ENDED = ("eos", "stop")
LOOP_SPAN = 6
LOOP_SHORT_TIMES = 4
SENTENCE_TIMES = 3
_LONG_REPEAT = re.compile(rf"(.{{{LOOP_SPAN},}}?)\1", re.S)
_SHORT_REPEAT = re.compile(rf"(.{{1,{LOOP_SPAN - 1}}}?)\1{{{LOOP_SHORT_TIMES - 1},}}", re.S)
_SENTENCE_END = re.compile(r"[。！？；!?;\n]+")
DEFAULT_SOURCE = ROOT / "resources" / "retrieval_questions.jsonl"
TEST_SPLITS = ("test", "test2", "test3", "test4")


def loops(text: str) -> str | None:
    """Why ``text`` loops ('span' or 'sentence'), or None (see the module docstring)."""
    compact = re.sub(r"\s+", "", text)
    if _LONG_REPEAT.search(compact) or _SHORT_REPEAT.search(compact):
        return "span"
    sentences = Counter(s for s in (x.strip() for x in _SENTENCE_END.split(text)) if len(s) >= 4)
    if sentences and max(sentences.values()) >= SENTENCE_TIMES:
        return "sentence"
    return None


def _key(law_name: str | None, number: int | None, suffix: int) -> tuple:
    return (law_name, number, suffix or 0)


def gold_keys(gold: list[str], store: StatuteStore) -> set[tuple]:
    """The (law, number, suffix) of each gold citation; an unresolvable gold string is an error."""
    keys = set()
    for citation in gold:
        verdicts = [v for v in check_citations(citation, store) if v.status == "verified"]
        if not verdicts:
            raise DataError(f"gold citation {citation!r} is not an article in force in the statute store")
        keys.update(_key(v.law_name, v.number, v.suffix) for v in verdicts)
    return keys


def read_answers(path: str | Path) -> list[dict]:
    records = [r.data for r in read_records(Path(path))]
    for i, record in enumerate(records, start=1):
        if "answer" not in record or "finish_reason" not in record:
            raise DataError(f"{path}:{i}: not an infer.py answer record (needs 'answer' and 'finish_reason')")
    return sorted(records, key=lambda r: r.get("index", 0))


def read_gold(path: str | Path) -> dict[str, list[str]]:
    """question text -> gold citations, from a file of {question|instruction, gold}."""
    out = {}
    for record in read_records(Path(path)):
        question = record.data.get("instruction") or record.data.get("question")
        if not question or not isinstance(record.data.get("gold"), list):
            raise DataError(f"{record.where}: needs 'question' (or 'instruction') and a 'gold' list")
        out[question] = record.data["gold"]
    return out


def base_vocab_size(model_dir: str | Path, depth: int = 6) -> int:
    """``base_rows`` recorded by the stage that grew the vocabulary (train_clm.py), found by following run_info.json
    back from ``model_dir``; raises DataError when no stage in the chain grew it."""
    seen, todo = set(), [Path(model_dir)]
    while todo and depth:
        depth -= 1
        nxt = []
        for d in todo:
            path = d / "run_info.json"
            if d in seen or not path.is_file():
                continue
            seen.add(d)
            info = json.loads(path.read_text(encoding="utf-8"))
            stack = [info]
            while stack:  # base_rows may sit in a nested record (merge_lora copies the adapter's run_info)
                node = stack.pop()
                if isinstance(node, dict):
                    # the stage that grew the vocabulary; a later stage (SFT on the grown model) records its own
                    # rows as base_rows with grew False
                    if isinstance(node.get("base_rows"), int) and node.get("grew") is not False:
                        return node["base_rows"]
                    stack.extend(node.values())
                    nxt += [Path(node[k]) for k in ("base_model", "merged_from", "lora_model")
                            if isinstance(node.get(k), str)]
        todo = nxt
    raise DataError(f"{model_dir}: no base_rows in its run_info.json chain (was the vocabulary extended?); "
                    "pass --base_vocab_size")


def new_token_share(ids: list[int], base: int) -> float | None:
    return sum(i >= base for i in ids) / len(ids) if ids else None


def rate(records: list[dict], store: StatuteStore, gold: dict[str, list[str]] | None = None,
         tokenizer=None, base: int | None = None) -> dict:
    """The figures of the module docstring for one file's answers."""
    n = len(records)
    out = {"n": n, "ends": sum(r["finish_reason"] in ENDED for r in records) / n if n else 0.0}
    loop_kinds = Counter(loops(r["answer"]) for r in records)
    out["loops"] = (n - loop_kinds[None]) / n if n else 0.0
    cites, statuses, gold_n, gold_cited, gold_retrieved, rag_n = 0, Counter(), 0, 0, 0, 0
    quotes, confirmed = Counter(), 0
    for r in records:
        verdicts = [v for v in check_citations(r["answer"], store) if v.status != "law_in_force"]
        judge_relevance(verdicts, r["instruction"])  # today's --rag retriever judges the fit, for every file alike
        confirmed += sum(v.confirmed for v in verdicts)
        cites += bool(verdicts)
        statuses.update(v.status for v in verdicts)
        for v in verdicts:
            if v.quote_matches is not None:
                quotes["quoted"] += 1
                quotes["similar"] += v.quote_similarity >= QUOTE_THRESHOLD
                quotes["faithful"] += v.quote_matches
        cited = {_key(v.law_name, v.number, v.suffix) for v in verdicts if v.status == "verified"}
        golds = (gold or {}).get(r["instruction"])
        if golds:
            keys = gold_keys(golds, store)
            gold_n += 1
            gold_cited += bool(keys & cited)
            if "articles" in r:
                rag_n += 1
                gold_retrieved += bool(keys & {_key(a["law_name"], a["number"], a["suffix"]) for a in r["articles"]})
    total = sum(statuses.values())
    out.update({"cites": cites / n if n else 0.0, "citations": total,
                "verified": statuses["verified"] / total if total else None, "citation_statuses": dict(statuses),
                "confirmed": confirmed / total if total else None,
                "gold_n": gold_n, "gold_cited": gold_cited / gold_n if gold_n else None,
                "gold_retrieved": gold_retrieved / rag_n if rag_n else None, "quotes": quotes["quoted"],
                "quotes_similar": quotes["similar"] / quotes["quoted"] if quotes["quoted"] else None,
                "quotes_faithful": quotes["faithful"] / quotes["quoted"] if quotes["quoted"] else None})
    if tokenizer is not None:
        ids = [i for r in records for i in r.get("answer_ids") or []]
        if not ids:
            raise DataError("no answer_ids in the records: rerun infer.py (it records the generated ids)")
        refs = [r["reference"] for r in records if r.get("reference")]
        source = "references"
        if not refs:
            refs = list({a["text"] for r in records for a in r.get("articles", [])})
            source = "retrieved articles"
        ref_ids = [i for t in refs for i in tokenizer(t, add_special_tokens=False)["input_ids"]]
        out.update({"generated_ids": len(ids), "new_token_rate": new_token_share(ids, base),
                    "reference_new_token_rate": new_token_share(ref_ids, base), "reference_source": source})
    return out


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.0f}%"


def table(results: dict[str, dict]) -> str:
    rows = [("n answers", lambda r: str(r["n"])), ("end by themselves", lambda r: _pct(r["ends"])),
            ("loop", lambda r: _pct(r["loops"])), ("cite ≥ 1 article", lambda r: _pct(r["cites"])),
            ("citations: the article exists, in force", lambda r: f"{_pct(r['verified'])} of {r['citations']}"),
            ("confirmed: exists, quote faithful, fits the question", lambda r: _pct(r.get("confirmed"))),
            ("gold article cited", lambda r: f"{_pct(r['gold_cited'])} of {r['gold_n']}" if r["gold_n"] else "–"),
            ("gold article retrieved (recall@k)", lambda r: _pct(r["gold_retrieved"])),
            ("quotes similar (≥ 0.8) / faithful (numbers kept too)",
             lambda r: f"{_pct(r['quotes_similar'])} / {_pct(r['quotes_faithful'])} of {r['quotes']}")]
    if any("new_token_rate" in r for r in results.values()):
        rows.append(("new-token rate: answers / reference", lambda r: (
            f"{_pct(r['new_token_rate'])} / {_pct(r['reference_new_token_rate'])}" if "new_token_rate" in r else "–")))
    lines = ["| | " + " | ".join(results) + " |", "|---|" + "---:|" * len(results)]
    lines += [f"| {name} | " + " | ".join(fn(r) for r in results.values()) + " |" for name, fn in rows]
    return "\n".join(lines)


def make_questions(source: Path, splits: list[str], per_split: int, output: Path) -> int:
    """An infer.py data file ({instruction, input, gold}) from the first ``per_split`` questions of each split."""
    taken, out = Counter(), []
    for record in read_records(source):
        split = record.data.get("split")
        if split in splits and (not per_split or taken[split] < per_split):
            taken[split] += 1
            out.append({"instruction": record.data["question"], "input": "", "gold": record.data["gold"]})
    if not out:
        raise DataError(f"{source}: no questions in split(s) {', '.join(splits)}")
    return write_jsonl(output, out)


def write_json(path: str | Path, results: dict) -> None:
    """``--output_json``: the figures as JSON (the folder made when missing)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(results, ensure_ascii=False, indent=1), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    q = sub.add_parser("questions", help="write held-out questions with gold citations as an infer.py data file")
    q.add_argument("--source", default=str(DEFAULT_SOURCE), help="JSONL of {question, gold, split}")
    q.add_argument("--splits", default=",".join(TEST_SPLITS), help="comma-separated splits to take")
    q.add_argument("--per_split", type=int, default=10, help="first N questions of each split (0: all)")
    q.add_argument("--output", required=True)
    r = sub.add_parser("rate", help="rate infer.py answer files")
    r.add_argument("answers", nargs="+", help="infer.py output JSONL files")
    r.add_argument("--labels", nargs="*", help="one column label per file (default: file names)")
    r.add_argument("--questions", help="questions with gold citations ({question|instruction, gold})")
    r.add_argument("--tokenizer", nargs="*", help="each file's model directory (its tokenizer), '-' for none: "
                   "new-token rate")
    r.add_argument("--base_vocab_size", type=int, help="ids >= this are new tokens (default: from run_info.json)")
    r.add_argument("--output_json", help="write the figures here too")
    args = parser.parse_args(argv)
    try:
        if args.command == "questions":
            count = make_questions(Path(args.source), [s.strip() for s in args.splits.split(",")], args.per_split,
                                   Path(args.output))
            print(f"[bench_answers] wrote {count} questions to {args.output}")
            return 0
        labels = args.labels or [Path(p).stem for p in args.answers]
        if len(labels) != len(args.answers):
            raise DataError(f"--labels: {len(labels)} label(s) for {len(args.answers)} file(s)")
        store = StatuteStore.load()
        gold = read_gold(args.questions) if args.questions else None
        models = args.tokenizer or ["-"] * len(args.answers)
        if len(models) != len(args.answers):
            raise DataError(f"--tokenizer: {len(models)} director(ies) for {len(args.answers)} file(s) ('-' for none)")
        results = {}
        for label, path, model in zip(labels, args.answers, models):
            tokenizer, base = None, None
            if model != "-":
                from transformers import AutoTokenizer

                tokenizer = AutoTokenizer.from_pretrained(model)
                base = args.base_vocab_size or base_vocab_size(model)
            results[label] = rate(read_answers(path), store, gold, tokenizer, base)
    except (DataError, OSError) as e:
        print(f"bench_answers: error: {e}", file=sys.stderr)
        return 1
    print(table(results))
    if args.output_json:
        write_json(args.output_json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
