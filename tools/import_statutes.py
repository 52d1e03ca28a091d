"""Import judicial interpretations, regulations or any other legal documents into the statute store.

    # a checkout of LawRefBook/Laws (github.com/LawRefBook/Laws): its 司法解释 and 行政法规 folders
    python tools/import_statutes.py --lawrefbook_dir ../Laws
    python tools/import_statutes.py --lawrefbook_dir ../Laws --folders 司法解释 --output data/statutes/spc.jsonl.xz
    # your own documents in the documents format (docs/data.md), checked line by line
    python tools/import_statutes.py --jsonl my_regulations.jsonl --output data/statutes/mine.jsonl

The output goes to ``data/statutes/`` by default, where the default store finds it beside the shipped
``resources/statutes/lawrefbook.jsonl.xz`` (infer, webui, api, evaluate, the data tools: no flag needed; a version
in your file replaces the same version shipped). Versions are settled as the store settles them: the newest version of
a title is in force, older ones superseded (kept known, without their articles). What was imported is printed:
documents by type and status, articles, duplicates dropped. Format and sources: docs/data.md.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from utils.common.datafiles import DataError  # noqa: E402
from utils.common.entry import run_entry  # noqa: E402
from utils.legal.documents import (  # noqa: E402
    FOLDER_TYPES,
    import_lawrefbook,
    lawrefbook_files,
    read_documents,
    settle_versions,
    write_documents,
)
from utils.legal.statutes import DOCUMENT_DIRS  # noqa: E402

DEFAULT_OUTPUT = ROOT / "data" / "statutes" / "lawrefbook.jsonl.xz"


def main(args: argparse.Namespace) -> dict:
    if args.lawrefbook_dir:
        folders = tuple(f.strip() for f in args.folders.split(",") if f.strip())
        unknown = [f for f in folders if f not in FOLDER_TYPES]
        if unknown:
            raise DataError(f"--folders: {', '.join(unknown)} is not one of {', '.join(FOLDER_TYPES)}")
        with tqdm(total=len(lawrefbook_files(args.lawrefbook_dir, folders)), desc="LawRefBook files", unit="file") as bar:
            documents, stats = import_lawrefbook(args.lawrefbook_dir, folders, args.source, bar.update)
    else:
        documents = settle_versions(read_documents(args.jsonl))
        stats = {"files": len(documents), "by_type_status": dict(Counter(f"{d.doc_type}/{d.status}" for d in documents)),
                 "articles_in_force": sum(len(d.articles) for d in documents if d.status == "in_force")}
    if not documents:
        raise DataError("no documents found: nothing written")
    write_documents(documents, args.output)
    read_documents(args.output)  # what the store will read: every record checked (file:line errors)
    print(f"[import_statutes] {len(documents)} document{'s' * (len(documents) != 1)} → {args.output}")
    if Path(args.output).resolve().parent not in [d.resolve() for d in DOCUMENT_DIRS]:
        print(f"[import_statutes] note: the default store loads {', '.join(str(d) for d in DOCUMENT_DIRS)} only; "
              f"load this file with StatuteStore.load(documents=[...]) or move it there")
    for key, count in sorted(stats["by_type_status"].items()):
        print(f"  {key}: {count}")
    print(f"  articles of documents in force: {stats['articles_in_force']:,}"
          + (f"; duplicates dropped: {stats['duplicate_files_dropped']} files, "
             f"{stats['duplicate_articles_dropped']} articles" if "duplicate_files_dropped" in stats else ""))
    return stats


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--lawrefbook_dir", help="a checkout of LawRefBook/Laws (its markdown folders)")
    source.add_argument("--jsonl", help="a file in the documents format (.jsonl or .jsonl.xz)")
    parser.add_argument("--folders", default=",".join(FOLDER_TYPES),
                        help=f"LawRefBook folders to import (default: {','.join(FOLDER_TYPES)}; missing ones are "
                             "skipped)")
    parser.add_argument("--source", default="LawRefBook/Laws",
                        help="provenance written into every document, e.g. LawRefBook/Laws@<commit>")
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT),
                        help="where to write (.jsonl, or .jsonl.xz compressed); default data/statutes/, which the "
                             "default store loads")
    args = parser.parse_args(argv)
    if not args.output.endswith((".jsonl", ".jsonl.xz")):
        parser.error(f"--output {args.output}: must end in .jsonl or .jsonl.xz (the store reads those)")
    return args


if __name__ == "__main__":
    sys.exit(run_entry("import_statutes", lambda: main(parse_args())))
