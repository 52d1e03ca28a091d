"""Verify the statute citations in generated answers, like a linter: every problem, then a summary.

    python tools/check_citations.py outputs/infer_results.jsonl
    python tools/check_citations.py results.jsonl --field output --output outputs/citations.jsonl
    python tools/check_citations.py results.jsonl --strict           # exit 2 when any citation is wrong
    python tools/check_citations.py results.jsonl --summary_only     # the table alone

Input: a .jsonl (or .json array) of records with an ``answer`` field (what infer.py writes; ``--field``
picks another). Every citation (《刑法》第二百六十四条, 劳动合同法第82条, 本法第N条 …) is checked against the
statute store: verified / law_in_force (a law named, no article) / not_found / repealed / unknown_law /
malformed_number (第六百八条: a numeral statutes never write) / not_in_store (a document such as a local regulation
that the store does not hold: not checked, not wrong), plus quoted text vs the article, every number included.
Wrong = not_found, repealed, unknown_law, malformed_number or a quote that does not match.

Output: one line per wrong citation, ``file:line: citation: verdict: why`` (e.g.
``results.jsonl:2: 《刑法》第九百条: not_found: 中华人民共和国刑法 has no 第九百条``), then the summary table.
Exit status: 0 when the file was checked (problems or not), 2 with ``--strict`` when a problem was found,
1 on unreadable input. ``--output`` writes one record per input record (its line, the verdicts) as JSONL,
atomically.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from utils.common.datafiles import DataError, read_records, write_jsonl  # noqa: E402
from utils.common.entry import run_entry  # noqa: E402
from utils.legal.citations import PROBLEMS, VERDICTS, Verdict, check_citations, summarize  # noqa: E402
from utils.legal.statutes import StatuteStore  # noqa: E402


def check_file(path: str, field: str, store: StatuteStore) -> list[tuple[str, list[Verdict]]]:
    """(file:line, verdicts) per record; a record without a string ``field`` is an error."""
    out = []
    for record in read_records(path):
        answer = record.data.get(field)
        if not isinstance(answer, str):
            found = "nothing (missing)" if answer is None else type(answer).__name__
            raise DataError(f"{record.where}: field {field!r} must be a string, got {found} "
                            f"(fields: {', '.join(record.data) or 'none'}; pick one with --field)")
        out.append((record.where, check_citations(answer, store)))
    return out


def _wrong(v: Verdict) -> bool:
    """A citation the text gets wrong; a law in force named without an article (law_in_force) is not."""
    return v.status in PROBLEMS or v.quote_matches is False


def table(results: list[tuple[str, list[Verdict]]]) -> str:
    verdicts = [v for _, vs in results for v in vs]
    counts = summarize(verdicts)
    total = len(verdicts)
    rows = [("records", len(results), ""), ("records citing something", sum(bool(vs) for _, vs in results), ""),
            ("citations", total, "")]
    rows += [(f"  {status}", counts[status], f"{counts[status] / total:.1%}" if total else "-") for status in VERDICTS]
    quoted = sum(v.quote is not None for v in verdicts)
    rows += [("quotes checked", quoted, ""), ("  quote does not match", counts["quote_mismatch"],
                                            f"{counts['quote_mismatch'] / quoted:.1%}" if quoted else "-")]
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{name:<{width}}  {value:>7}  {share:>6}" for name, value, share in rows)


def main(args: argparse.Namespace) -> int:
    store = StatuteStore.load()
    results = check_file(args.file, args.field, store)
    bad = 0
    for where, verdicts in results:
        for v in filter(_wrong, verdicts):
            bad += 1
            if not args.summary_only:
                print(f"{where}: {v.text}: {v.status if v.status in PROBLEMS else 'quote_mismatch'}: {v.message}")
    if bad and not args.summary_only:
        print()
    print(table(results))
    print(f"{bad} wrong citation{'s' if bad != 1 else ''}" + (" (listed above)" if bad and not args.summary_only else ""))
    if args.output:
        n = write_jsonl(args.output, ({"where": where, "citations": [v.to_dict() for v in vs],
                                       "summary": summarize(vs)} for where, vs in results))
        print(f"wrote {n} records → {args.output}")
    return 2 if args.strict and bad else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", help="results .jsonl/.json with an `answer` field per record")
    parser.add_argument("--field", default="answer", help="the field holding the text to check (default: answer)")
    parser.add_argument("--summary_only", action="store_true",
                        help="print only the summary table, not the list of wrong citations")
    parser.add_argument("--details", action="store_true", help=argparse.SUPPRESS)  # the old opt-in; listing is the default now
    parser.add_argument("--output", help="write the verdicts per record here (.jsonl)")
    parser.add_argument("--strict", action="store_true", help="exit with status 2 if any citation is wrong (not found, repealed, unknown law, misquoted)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(run_entry("check_citations", lambda: main(parse_args())))
