"""Does a second, unrelated question in a chat get its own answer? Rates a model's answers to follow-up questions.

Issue 28: the demo model, trained on single turns, answered an unrelated second question in a web-UI chat with its
first answer word for word. This benchmark asks held-out questions twice — alone, and as the second turn of a chat
whose first turn is another held-out question (on another law) with the model's own answer to it — through infer.py,
as the web UI and the API do (history without articles, ``--rag`` retrieval for the question asked now):

    python benchmarks/bench_answers.py questions --output heldout.jsonl --per_split 10
    python infer.py --base_model M --infer_data_path heldout.jsonl --output_path alone.jsonl --rag \\
        --max_new_tokens 256 --no_repeat_ngram_size 6
    python benchmarks/bench_followup.py chats --alone alone.jsonl --output chats.jsonl
    python infer.py --base_model M --infer_data_path chats.jsonl --output_path second.jsonl --rag \\
        --max_new_tokens 256 --no_repeat_ngram_size 6
    python benchmarks/bench_followup.py rate --alone alone.jsonl --second second.jsonl --chats chats.jsonl

Per chat (first question F with answer A_F, second question S asked alone → A_S, in the chat → B):

- **repeats the first answer**: B is A_F again, or close to it — ``difflib`` ratio over characters ≥ ``PARROT``
  (0.8) — while A_S is not (the parrot of issue 28);
- **carries a citation over**: B cites an article that A_F cited and that was not retrieved for S;
- **cites its own retrieved article**: B cites (verified) an article among those retrieved for S;
- **same as alone**: B equals A_S character for character — the history changed nothing;
- ends by itself / loops: as benchmarks/bench_answers.py defines them.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_answers import ENDED, loops, write_json  # noqa: E402
from utils.common.datafiles import DataError, read_records, write_jsonl  # noqa: E402
from utils.legal.citations import check_citations  # noqa: E402
from utils.legal.statutes import StatuteStore  # noqa: E402

PARROT = 0.8


def _answers(path: str | Path) -> list[dict]:
    records = sorted((r.data for r in read_records(Path(path))), key=lambda r: r.get("index", 0))
    for i, record in enumerate(records, start=1):
        if "answer" not in record or "articles" not in record:
            raise DataError(f"{path}:{i}: not an infer.py --rag answer record (needs 'answer' and 'articles')")
    return records


def _laws_of(record: dict, store: StatuteStore) -> set[str]:
    return {v.law_name for v in check_citations(record["answer"], store) if v.law_name} | \
        {a["law_name"] for a in record["articles"][:1]}


def make_chats(alone: list[dict], store: StatuteStore) -> list[dict]:
    """One chat per answered question S: its first turn is another question F (half the list away, the next one
    whose answer and first retrieved article name other laws than S's), with the model's answer to F."""
    n = len(alone)
    if n < 2:
        raise DataError("need at least two answered questions to make chats")
    laws = [_laws_of(r, store) for r in alone]
    chats = []
    for i, second in enumerate(alone):
        for step in range(n // 2, n // 2 + n):
            j = (i + step) % n
            if j != i and not laws[i] & laws[j]:
                break
        else:
            raise DataError(f"no question on another law to put before {second['instruction']!r}")
        first = alone[j]
        chats.append({"instruction": second["instruction"], "input": "", "gold": second.get("gold"),
                      "history": [[first["instruction"], first["answer"]]], "first_index": first.get("index", j),
                      "second_index": second.get("index", i)})
    return chats


def _cited(record: dict, store: StatuteStore) -> set[tuple]:
    return {(v.law_name, v.number, v.suffix or 0) for v in check_citations(record["answer"], store)
            if v.status == "verified"}


def _retrieved(record: dict) -> set[tuple]:
    return {(a["law_name"], a["number"], a["suffix"] or 0) for a in record["articles"]}


def similarity(a: str, b: str) -> float:
    """difflib's ratio over characters, 0–1."""
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def rate(alone: list[dict], second: list[dict], chats: list[dict], store: StatuteStore) -> dict:
    """The figures of the module docstring (shares over the chats), and per-chat details."""
    if len(second) != len(chats):
        raise DataError(f"{len(second)} second-turn answers for {len(chats)} chats: was infer.py run on the chats file?")
    by_index = {r.get("index", i): r for i, r in enumerate(alone)}
    rows = []
    for chat, b in zip(chats, second):
        if b["instruction"] != chat["instruction"]:
            raise DataError(f"answer {b.get('index')} is to {b['instruction']!r}, not the chat's {chat['instruction']!r}")
        first, own = by_index[chat["first_index"]], by_index[chat["second_index"]]
        cited_b = _cited(b, store)
        parrot_b = similarity(b["answer"], first["answer"])
        parrot_alone = similarity(own["answer"], first["answer"])
        rows.append({
            "second": chat["instruction"], "first": first["instruction"],
            "repeats_first": parrot_b >= PARROT and parrot_alone < PARROT,
            "carries_citation": bool((cited_b & _cited(first, store)) - _retrieved(b)),
            "cites_own_retrieved": bool(cited_b & _retrieved(b)),
            "alone_cites_own_retrieved": bool(_cited(own, store) & _retrieved(own)),
            "same_as_alone": b["answer"] == own["answer"],
            "ends": b["finish_reason"] in ENDED, "loops": loops(b["answer"]) is not None,
            "similarity_to_first": round(parrot_b, 3)})
    n = len(rows)
    keys = ("repeats_first", "carries_citation", "cites_own_retrieved", "alone_cites_own_retrieved", "same_as_alone",
            "ends", "loops")
    return {"n": n, **{k: sum(r[k] for r in rows) / n for k in keys}, "chats": rows}


TABLE_ROWS = (("second answer repeats the first (similarity ≥ 0.8)", "repeats_first"),
              ("carries a citation of the first answer over", "carries_citation"),
              ("cites an article retrieved for the question asked", "cites_own_retrieved"),
              ("the same question alone: cites its retrieved article", "alone_cites_own_retrieved"),
              ("second answer = the answer to it alone", "same_as_alone"),
              ("ends by itself", "ends"), ("loops", "loops"))


def table(results: dict[str, dict]) -> str:
    """Markdown: one column per rated run."""
    lines = ["| n chats | " + " | ".join(f"{name} ({r['n']})" for name, r in results.items()) + " |",
             "|---|" + "---:|" * len(results)]
    lines += [f"| {label} | " + " | ".join(f"{100 * r[key]:.0f}%" for r in results.values()) + " |"
              for label, key in TABLE_ROWS]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("chats", help="write two-turn chats (an infer.py data file) from answers to single questions")
    c.add_argument("--alone", required=True, help="infer.py --rag answers to the questions asked alone")
    c.add_argument("--output", required=True, help="the chats: an infer.py data file with history")
    r = sub.add_parser("rate", help="rate the second-turn answers")
    r.add_argument("--alone", nargs="+", required=True, help="the single-question answers, one file per model")
    r.add_argument("--second", nargs="+", required=True, help="infer.py --rag answers to the chats, one per model")
    r.add_argument("--chats", nargs="+", required=True, help="the chats file each model answered")
    r.add_argument("--labels", nargs="*", help="one label per model (default: the --second file names)")
    r.add_argument("--output_json", help="write the figures and per-chat details here too")
    args = parser.parse_args(argv)
    try:
        store = StatuteStore.load()
        if args.command == "chats":
            count = write_jsonl(Path(args.output), make_chats(_answers(args.alone), store))
            print(f"[bench_followup] wrote {count} chats to {args.output}")
            return 0
        labels = args.labels or [Path(p).stem for p in args.second]
        if not len(args.alone) == len(args.second) == len(args.chats) == len(labels):
            raise DataError("--alone, --second, --chats (and --labels) need one entry per model")
        results = {label: rate(_answers(a), _answers(s), [r.data for r in read_records(Path(c))], store)
                   for label, a, s, c in zip(labels, args.alone, args.second, args.chats)}
    except (DataError, OSError) as e:
        print(f"bench_followup: error: {e}", file=sys.stderr)
        return 1
    print(table(results))
    if args.output_json:
        write_json(args.output_json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
