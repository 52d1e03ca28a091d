"""Extend a base tokenizer with legal vocabulary and report what it gains.

    # new pieces from a sentencepiece model trained on the legal corpus (held-out docs excluded)
    python tools/merge_vocabulary.py --base_tokenizer models/base_models/llama \\
        --corpus data/pretrain/statutes.jsonl --vocab_size 8000 --output_dir models/tokenizers/legal
    # new words from a word list; the corpus only provides held-out text for the report
    python tools/merge_vocabulary.py --base_tokenizer models/base_models/gemma-3-270m \\
        --word_list resources/legal_vocab.txt --corpus data/pretrain/statutes.jsonl --output_dir models/tokenizers/legal

A base with a ``tokenizer.model`` (LLaMA family) gets pieces appended to its sentencepiece model; any other
(tokenizer.json only: Gemma, Qwen) gets ``add_tokens``. The output directory is a normal HF tokenizer plus
``report.json`` (base size, added, merged size, tokens/char on held-out text before and after, round trip,
a sample side by side). Train with it: ``train_clm.py --tokenizer_path <output_dir>``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from utils.common.datafiles import DataError, expand_paths, files_sha256, load_documents  # noqa: E402
from utils.common.entry import run_entry  # noqa: E402
from utils.model.loader import load_tokenizer  # noqa: E402
from utils.model.vocabulary import (  # noqa: E402
    SP_MODEL,
    VocabError,
    add_words,
    bpe_reachable_pieces,
    derive_word_list,
    has_sentencepiece,
    holds_part_of_a_number,
    load_word_list,
    merge_sentencepiece,
    normal_pieces,
    round_trip_failures,
    save_sentencepiece_tokenizer,
    sentencepiece_agreement,
    sentencepiece_normalizer,
    tokens_per_char,
    train_sentencepiece,
)

DOC_SUFFIXES = (".json", ".jsonl", ".txt", ".md")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base_tokenizer", required=True, help="directory of the base tokenizer (or base model)")
    p.add_argument("--corpus", nargs="+", required=True,
                   help="legal documents (.json/.jsonl 'content' records, .txt/.md, or directories of them)")
    p.add_argument("--output_dir", required=True, help="where the merged tokenizer and report.json go")
    p.add_argument("--word_list", help="take new words from this list (one per line) instead of training on the corpus")
    p.add_argument("--vocab_size", type=int, default=8000, help="size of the legal sentencepiece model (default 8000)")
    p.add_argument("--max_added", type=int, default=0, help="add at most this many new tokens (0: no limit)")
    p.add_argument("--heldout_every", type=int, default=10,
                   help="every N-th document is held out for the report and never used to build the vocabulary")
    p.add_argument("--write_word_list", help="also write the added words (add_tokens) or pieces to this file")
    p.add_argument("--derive_word_list", type=int, default=0,
                   help="instead of merging, write the N most frequent jieba words of the corpus to --write_word_list")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output_dir")
    p.add_argument("--numeral_pieces", action="store_true",
                   help="also add pieces holding part of a Chinese numeral (六十, 三条, 第一千零); by default they are "
                        "left out, so article numbers keep the base tokens (a briefly trained model dropped 十 "
                        "from numbers written with new pieces: 第二百六三条)")
    args = p.parse_args(argv)
    if args.vocab_size < 100:
        p.error(f"--vocab_size {args.vocab_size}: must be at least 100")
    if args.heldout_every < 2:
        p.error(f"--heldout_every {args.heldout_every}: must be at least 2")
    if args.derive_word_list and not args.write_word_list:
        p.error("--derive_word_list needs --write_word_list")
    return args


def split_heldout(docs: list[str], every: int) -> tuple[list[str], list[str]]:
    train = [d for i, d in enumerate(docs) if i % every != every - 1]
    heldout = [d for i, d in enumerate(docs) if i % every == every - 1]
    if not heldout:
        raise DataError(f"corpus has {len(docs)} documents: too few to hold out every {every}-th one")
    return train, heldout


def new_entries(args, base_tokenizer, train_docs: list[str], sentencepiece: bool, tmp: Path) -> list[str]:
    """Candidate pieces (sentencepiece base) or words (add_tokens base), most useful first."""
    if args.word_list:
        words = load_word_list(args.word_list)
        return bpe_reachable_pieces(base_tokenizer, words) if sentencepiece else words
    legal = train_sentencepiece(train_docs, tmp / "legal", args.vocab_size)
    pieces = normal_pieces(legal)
    if sentencepiece:
        return pieces
    # add_tokens matches whole strings, so only full words help: multi-character Chinese pieces.
    words = [p.lstrip("\u2581") for p in pieces]
    return [w for w in words if len(w) >= 2 and all("\u4e00" <= c <= "\u9fff" for c in w)]


def merge(args) -> dict:
    base_dir = Path(args.base_tokenizer)
    files = expand_paths(args.corpus, DOC_SUFFIXES)
    docs = [d for f in files for d in load_documents(f)]
    train_docs, heldout = split_heldout(docs, args.heldout_every)
    if args.derive_word_list:
        words = derive_word_list(train_docs, args.derive_word_list)
        _write_lines(args.write_word_list, words)
        return {"derived_words": len(words), "word_list": args.write_word_list}

    out = Path(args.output_dir)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise VocabError(f"--output_dir {out} exists and is not empty: pass --overwrite or choose another")
    base = load_tokenizer(base_dir, padding_side="right")
    sentencepiece = has_sentencepiece(base_dir)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        entries = new_entries(args, base, train_docs, sentencepiece, tmp)
        numeral = set() if args.numeral_pieces else {e for e in entries if holds_part_of_a_number(e)}
        entries = [e for e in entries if e not in numeral]
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent if out.parent.exists() else None))
        if sentencepiece:
            # Keep the cap on *added* pieces: skip those the base already has before cutting.
            base_pieces = set(normal_pieces(base_dir / SP_MODEL))
            fresh = list(dict.fromkeys(e for e in entries if e not in base_pieces))
            capped = fresh[: args.max_added] if args.max_added else fresh
            result = merge_sentencepiece(base_dir / SP_MODEL, capped, tmp / "merged.model")
            result.already_in_base = len(set(entries)) - len(fresh)
            result.duplicates = len(entries) - len(set(entries))
            merged = save_sentencepiece_tokenizer(base_dir, base, tmp / "merged.model", staging)
        else:
            merged = load_tokenizer(base_dir, padding_side="right")
            result = add_words(merged, entries[: args.max_added] if args.max_added else entries)
            merged.save_pretrained(str(staging))
        result.numeral_pieces_left_out = len(numeral)
    report = build_report(args, base, merged, result, heldout, files, sentencepiece, staging)
    tmp_report = staging / "report.json.tmp"
    tmp_report.write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp_report, staging / "report.json")
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staging, out)
    if args.write_word_list:
        _write_lines(args.write_word_list, result.added)
    return report


def build_report(args, base, merged, result, heldout, files, sentencepiece, merged_dir) -> dict:
    before, after = tokens_per_char(base, heldout), tokens_per_char(merged, heldout)
    failures = round_trip_failures(merged, heldout)
    sample = heldout[0][:60]
    report = {
        "base_tokenizer": str(args.base_tokenizer),
        "method": "sentencepiece-append" if sentencepiece else "add_tokens",
        "source": args.word_list or f"legal sentencepiece BPE, vocab_size {args.vocab_size}",
        "corpus": [str(f) for f in files],
        "corpus_sha256": files_sha256(files),
        "base_size": len(base),
        "added": len(result.added),
        "skipped_already_in_base": result.already_in_base,
        "skipped_duplicates": result.duplicates,
        "skipped_numeral_pieces": result.numeral_pieces_left_out,
        "merged_size": len(merged),
        "heldout_documents": len(heldout),
        "heldout_characters": sum(len(t) for t in heldout),
        "tokens_per_char_base": round(before, 4),
        "tokens_per_char_merged": round(after, 4),
        "token_reduction": round(1 - after / before, 4),
        "round_trip_ok": len(heldout) - len(failures),
        "round_trip_failed": len(failures),
        "sample": {
            "text": sample,
            "base": base.convert_ids_to_tokens(base(sample, add_special_tokens=False).input_ids),
            "merged": merged.convert_ids_to_tokens(merged(sample, add_special_tokens=False).input_ids),
        },
    }
    if sentencepiece:
        # Documents (of heldout_documents) that tokenizer.json and tokenizer.model segment identically,
        # for the merged tokenizer and, to tell a merge fault from an inherited one, for the base.
        report["hf_sentencepiece_agree"] = sentencepiece_agreement(merged, merged_dir / SP_MODEL, heldout)
        base_model_file = Path(args.base_tokenizer) / SP_MODEL
        report["hf_sentencepiece_agree_base"] = sentencepiece_agreement(base, base_model_file, heldout)
        report["sentencepiece_normalizer"] = sentencepiece_normalizer(base_model_file)
    return report


def agreement_warning(report: dict) -> str | None:
    """A loud explanation when tokenizer.json and tokenizer.model disagree on held-out text, else None."""
    if "hf_sentencepiece_agree" not in report or report["hf_sentencepiece_agree"] == report["heldout_documents"]:
        return None
    n, merged, base = report["heldout_documents"], report["hf_sentencepiece_agree"], report["hf_sentencepiece_agree_base"]
    message = (f"the merged tokenizer's tokenizer.json (Hugging Face: training, serving) and tokenizer.model "
               f"(sentencepiece: llama.cpp's converter and other sentencepiece tools) segment {n - merged} of {n} "
               f"held-out documents differently (hf_sentencepiece_agree {merged}/{n}). ")
    if base < n:
        normalizer = report["sentencepiece_normalizer"]
        cause = (f"its sentencepiece normaliser is '{normalizer}', which the Hugging Face conversion does not apply "
                 "(e.g. NFKC turns full-width ，：（ into ASCII)" if normalizer != "identity" else
                 f"its normaliser is '{normalizer}'; compare the two on a held-out text to find the cause")
        return message + (f"The base tokenizer already disagrees on {n - base} of {n} ({cause}): inherited, not "
                          "caused by the merge. Training and serving use tokenizer.json; a tool that reads "
                          "tokenizer.model will see other token ids.")
    return message + ("The base tokenizer agrees on all of them, so the merge caused it: check the appended "
                      "pieces' scores (utils/vocab.merge_sentencepiece).")


def _write_lines(path: str, lines: list[str]) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(p.suffix + ".tmp")
    tmp.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    os.replace(tmp, p)


def main(argv: list[str] | None = None) -> int:
    """The command line: exit status 0, or 1 with one line on stderr (utils/common/entry.py)."""
    return run_entry("merge_vocabulary", lambda: _run(argv))


def _run(argv=None) -> int:
    args = parse_args(argv)
    report = merge(args)
    summary = {k: v for k, v in report.items() if k != "sample"}
    print(json.dumps(summary, ensure_ascii=False, indent=2))
    if "sample" in report:
        print("sample (base):  ", " ".join(report["sample"]["base"]))
        print("sample (merged):", " ".join(report["sample"]["merged"]))
    warning = agreement_warning(report)
    if warning:
        print(f"merge_vocabulary: WARNING: {warning}", file=sys.stderr)
    if report.get("round_trip_failed"):
        print(f"merge_vocabulary: error: {report['round_trip_failed']} held-out texts do not round-trip", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
