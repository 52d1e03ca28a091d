"""Preference pairs for dpo.py: ``{instruction, input, chosen, rejected, kind, …}`` JSONL, built two ways.

``--source store`` (no model needed): a question about an article's matter (a 刑法 charge, or a chapter/section
heading); ``chosen`` answers with the right in-force article, cited and quoted right; ``rejected`` is the same answer
made wrong in one controlled way, recorded as ``kind``:

- ``repealed_law``        民法典 → the law it replaced for that part (合同法, 物权法, 婚姻法, 侵权责任法 …): repealed
- ``nonexistent_article`` an article number the law does not have: not_found
- ``wrong_article``       another article's number with this article's text: the quote does not match it
- ``misquote``            the right citation, the quote continued with another article's text: quote mismatch
- ``unknown_law``         a law that does not exist (《刑》, 《民事法典》, 《劳动合约法》 …): unknown_law

``legal_refusal`` pairs keep the other side honest: the same question, ``chosen`` the right answer, ``rejected`` the
scope statement the out-of-scope pairs prefer — without them, DPO on identity and out-of-scope pairs learned to
answer every legal question with 「不好意思，我是LaWGPT…」 (benchmarks/LOG.md, alignment).

Every pair is checked: the chosen side passes the citation checker (all verified, quotes match), the rejected side
fails it, or the pair is not written. ``identity`` and ``out_of_scope`` pairs (utils/datagen/persona.py) prefer the configured
assistant name to another model's, and the scope statement to a legal-sounding answer to a question about cooking.

``--source model`` (on-policy): ``--num_samples`` answers per question from a local model (utils/inference/engine.py) or an
OpenAI-compatible endpoint (utils/datagen/llm_backends.py), ranked by the checker (utils/training/preference_pairs.py: a wrong citation <
citing nothing < citing verified articles < citing the question's gold article); a pair is kept when the best and the
worst answer are in different tiers. Questions: ``--questions FILE`` (instruction/input, optional ``gold`` citations)
or, by default, the store's questions with their article as gold. Answers are appended per question and a rerun resumes.

Like the other data tools, items touching LawBench are left out (tools/knowledge_instruct.py's filter), and so is any
question of ``--heldout`` (resources/alignment_heldout.jsonl, the questions the alignment figures are measured on).

    python tools/preference_data.py --output data/pref/store.jsonl --max_per_kind 500
    python tools/preference_data.py --source model --backend local --model_path models/lawgpt-demo \\
        --num_samples 4 --max_questions 200 --output data/pref/on_policy.jsonl
"""

from __future__ import annotations

import argparse
import random
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tools.knowledge_instruct import DEFAULT_LAWBENCH_DIR, kind_caps  # noqa: E402,I001
from utils.datagen.testset_overlap import LawBenchOverlap, read_lawbench  # noqa: E402
from utils.common.entry import run_entry  # noqa: E402
from utils.datagen.statute_items import FIRST_SPECIAL_PART_ARTICLE, GENERIC_HEADINGS, charge_articles, defining_article, eligible, heading  # noqa: E402,I001
from utils.legal.citations import QUOTE_THRESHOLD, quote_similarity  # noqa: E402
from utils.common.datafiles import DataError, read_records, write_jsonl  # noqa: E402
from utils.datagen.llm_backends import add_generator_arguments, generator_from_args  # noqa: E402
from utils.datagen.grounded import answer as grounded_answer  # noqa: E402
from utils.datagen.on_policy_pairs import on_policy_pairs, read_questions  # noqa: E402,I001
from utils.training.preference_pairs import assess  # noqa: E402
from utils.datagen.persona import DEFAULT_MAKER, DEFAULT_NAME, OUT_OF_SCOPE_ANSWERS, identity_items, out_of_scope_items  # noqa: E402,I001
from utils.legal.statutes import PRC, Article, StatuteError, StatuteStore, article_label, doc_types_option, LAW_TYPES  # noqa: E402

CORRUPTIONS = ("repealed_law", "nonexistent_article", "wrong_article", "misquote", "unknown_law")
REFUSAL = "legal_refusal"
PERSONA = ("identity", "out_of_scope")
KINDS = CORRUPTIONS + (REFUSAL,) + PERSONA
REFUSAL_HINT = "相关问题可以咨询其他专业人士"
DEFAULT_HELDOUT = ROOT / "resources" / "alignment_heldout.jsonl"
QUOTE_CHARS = 160  # quote at most this much of an article (a sentence end when there is one)

QUESTIONS = {
    "charge": ["{charge}会受到什么处罚？请给出法律依据。", "犯{charge}的法律后果是什么？依据哪一条？",
               "哪条法律规定了{charge}？请引用条文。"],
    "topic": ["关于{topic}，《{law}》是怎么规定的？请引用具体条文。", "{topic}方面的问题，应当依据哪条法律？",
              "请引用法条说明{law}对{topic}的规定。"],
}
ANSWERS = ["根据《{law}》{num}的规定：“{quote}”", "依据《{law}》{num}：“{quote}”",
           "这个问题适用《{law}》{num}的规定：“{quote}”"]  # the checker reads a quote right after the citation
# 民法典 took over these laws on 2021-01-01: article ranges of its parts → the law that part replaced.
CIVIL_CODE_PREDECESSORS = [(1, 204, "民法总则"), (205, 385, "物权法"), (386, 462, "担保法"), (463, 680, "合同法"),
                           (681, 702, "担保法"), (703, 988, "合同法"), (989, 1039, "民法通则"), (1040, 1092, "婚姻法"),
                           (1093, 1118, "收养法"), (1119, 1163, "继承法"), (1164, 1260, "侵权责任法")]
# A wrong law name: the short name cut short (《刑》, as small models write it), or a word swapped for a near one.
FAKE_NAME_EDITS = [("合同", "合约"), ("安全", "保障"), ("保护", "保障"), ("管理", "治理"), ("民法典", "民事法典"),
                   ("刑法", "刑罚法"), ("诉讼", "诉求"), ("公司", "企业公司"), ("法", "条例法")]
WRONG_IDENTITIES = ["我是Gemma，由Google DeepMind开发的开源语言模型。", "我是ChatGPT，由OpenAI开发的人工智能助手。",
                    "我是一名执业律师，有二十年的办案经验。", "我是通义千问，由阿里云开发的大语言模型。"]
FAKE_LEGAL = ["根据《中华人民共和国民法典》第一千二百零三条的规定，{q}属于民事法律关系，当事人应当依法处理，协商不成的可以向人民法院提起诉讼。",
              "依照《中华人民共和国刑法》第二百六十六条，{q}涉及相关法律责任，情节严重的应当依法追究。"]


# ---------------------------------------------------------------- the store's questions and right answers


def quote_of(article: Article) -> str:
    """The article's opening, cut at a sentence end within QUOTE_CHARS (a quote the checker reads whole)."""
    text = article.paragraphs[0] if article.paragraphs else article.text
    text = text.replace("“", "‘").replace("”", "’").replace('"', "'")
    if len(text) <= QUOTE_CHARS:
        return text
    cut = max(text.rfind(mark, 0, QUOTE_CHARS) for mark in "。；")
    return text[:cut + 1] if cut > 20 else text[:QUOTE_CHARS]


def law_short(article: Article) -> str:
    return article.short_name


def store_questions(store: StatuteStore, rng: random.Random, doc_types: tuple[str, ...] | None = LAW_TYPES) -> list[dict]:
    """One question per 刑法 charge (its defining article) and per law chapter/section heading (its first article)."""
    articles = eligible(store, doc_types)
    items = []
    for charge, candidates in sorted(charge_articles(articles).items()):
        main = defining_article(charge, candidates)
        items.append({"instruction": rng.choice(QUESTIONS["charge"]).format(charge=charge), "article": main})
    seen = set()
    for a in articles:
        key = (a.law_name, a.chapter, a.section)
        if key in seen or not a.chapter or (a.law_name == PRC + "刑法" and a.number >= FIRST_SPECIAL_PART_ARTICLE):
            continue
        seen.add(key)
        _, title = heading(a.section or a.chapter)
        if title in GENERIC_HEADINGS or title in ("总则", "附则") or len(title) < 2:
            continue
        items.append({"instruction": rng.choice(QUESTIONS["topic"]).format(law=law_short(a), topic=title),
                      "article": a})
    return items


def right_answer(article: Article, rng: random.Random) -> tuple[str, str]:
    """(answer template, its text) citing and quoting ``article``."""
    template = rng.choice(ANSWERS)
    return template, template.format(law=law_short(article), num=article.number_cn, quote=quote_of(article))


# ---------------------------------------------------------------- corruptions


def _other_article(store: StatuteStore, article: Article, rng: random.Random) -> Article | None:
    """Another article of the same law whose text the quote does not match."""
    quote = quote_of(article)
    pool = [a for a in store.articles_of(article.law_name) if a.number is not None and a is not article
            and not a.is_deleted and len(a.text) >= 20]
    for other in rng.sample(pool, min(8, len(pool))):
        if quote_similarity(quote, other.text) < QUOTE_THRESHOLD / 2:
            return other
    return None


def corrupt(kind: str, article: Article, template: str, store: StatuteStore, rng: random.Random) -> str | None:
    """``template`` filled in wrong in the way ``kind`` names; None when that corruption does not apply."""
    law, num, quote = law_short(article), article.number_cn, quote_of(article)
    if kind == "repealed_law":
        if article.law_name != PRC + "民法典":
            return None
        old = next(name for lo, hi, name in CIVIL_CODE_PREDECESSORS if lo <= article.number <= hi)
        return template.format(law=old, num=num, quote=quote)
    if kind == "nonexistent_article":
        last = max(a.number for a in store.articles_of(article.law_name) if a.number is not None)
        return template.format(law=law, num=article_label(last + rng.randint(1, 60)), quote=quote)
    if kind == "wrong_article":
        other = _other_article(store, article, rng)
        return None if other is None else template.format(law=law, num=other.number_cn, quote=quote)
    if kind == "misquote":
        other = _other_article(store, article, rng)
        if other is None:
            return None
        keep = quote[:max(4, len(quote) // 4)]
        return template.format(law=law, num=num, quote=keep + quote_of(other)[len(keep):])
    if kind == "unknown_law":
        names = [law[:1]] if len(law) > 2 and law.endswith("法") else []  # 《刑》 for 《刑法》
        names += [law.replace(a, b, 1) for a, b in FAKE_NAME_EDITS if a in law]
        fakes = [n for n in names if n != law and store.resolve_law(n) is None]
        return template.format(law=rng.choice(fakes), num=num, quote=quote) if fakes else None
    raise ValueError(f"unknown corruption kind {kind!r}")


def passes(text: str, store: StatuteStore) -> bool:
    a = assess(text, store)
    return not a.wrong and a.cites_verified


def store_pairs(store: StatuteStore, kinds: list[str], rng: random.Random, max_questions: int = 0,
                name: str = DEFAULT_NAME, doc_types: tuple[str, ...] | None = LAW_TYPES) -> tuple[list[dict], Counter]:
    """Corruption pairs (and ``legal_refusal`` pairs) for every store question (or a seeded sample of
    ``max_questions``) and every kind that applies, each checked both ways."""
    pairs, counts = [], Counter()
    questions = store_questions(store, rng, doc_types)
    if max_questions and len(questions) > max_questions:
        questions = rng.sample(questions, max_questions)
    for question in questions:
        article = question["article"]
        template, chosen = right_answer(article, rng)
        if not passes(chosen, store):
            counts["chosen_fails_checker"] += 1
            continue
        for kind in kinds:
            if kind == REFUSAL:
                rejected = rng.choice(OUT_OF_SCOPE_ANSWERS).format(name=name, hint=REFUSAL_HINT)
            else:
                rejected = corrupt(kind, article, template, store, rng)
            if rejected is None:
                continue
            if passes(rejected, store):
                counts["rejected_passes_checker"] += 1
                continue
            pairs.append({"instruction": question["instruction"], "input": "", "chosen": chosen, "rejected": rejected,
                          "kind": kind, "source": article.citation,
                          "_key": (article.law_name, article.number, article.suffix), "_article": article})
    return pairs, counts


def persona_pairs(kinds: list[str], rng: random.Random, name: str, maker: str) -> list[dict]:
    pairs = []
    if "identity" in kinds:
        for item in identity_items(name, maker):
            wrong = [w for w in WRONG_IDENTITIES if name.lower() not in w.lower()]
            chosen = item.pop("output")
            pairs.append({**item, "chosen": chosen, "rejected": rng.choice(wrong), "source": "persona"})
    if "out_of_scope" in kinds:
        for item in out_of_scope_items(name):
            chosen, question = item.pop("output"), item["instruction"].rstrip("？?。！!")
            pairs.append({**item, "chosen": chosen, "rejected": rng.choice(FAKE_LEGAL).format(q=question),
                          "source": "persona"})
    for pair in pairs:
        pair["_key"] = None
    return pairs


def reject_quoting_given_articles(pairs: list[dict], rng: random.Random) -> int:
    """Identity and out-of-scope pairs given retrieved articles reject what a model trained on grounded answers does
    with such a prompt: quote the first article as if it settled the question (the demo's SFT model answered 87% of
    held-out out-of-scope questions so, 「根据《铁路法》第五十一条规定：…」 for a travel route; benchmarks/LOG.md, alignment).
    Needs ``_hits`` (utils/rag.add_retrieved_articles ``keep_hits``); returns how many rejected answers it set."""
    changed = 0
    for pair in pairs:
        if pair["kind"] in PERSONA and pair.get("_hits"):
            pair["rejected"] = grounded_answer(pair["_hits"][0].article, rng)
            changed += 1
    return changed


# ---------------------------------------------------------------- command line


def heldout_questions(path: str | None) -> set[str]:
    if not path:
        return set()
    return {str(r.data.get("question") or r.data.get("instruction")).strip() for r in read_records(path)}


def lawbench_filter(args: argparse.Namespace, store: StatuteStore) -> LawBenchOverlap | None:
    if args.no_lawbench_check:
        return None
    dirs = [Path(d) for d in args.lawbench_dir] if args.lawbench_dir else [DEFAULT_LAWBENCH_DIR]
    missing = [d for d in dirs if not d.is_dir()]
    if missing:
        raise DataError(f"no LawBench data at {', '.join(map(str, missing))}: get it with `python "
                        f"tools/prepare_lawbench.py --output_dir {missing[0]}` or pass --no_lawbench_check")
    return LawBenchOverlap([item for d in dirs for item in read_lawbench(d)], store)


def build_store(args: argparse.Namespace, store: StatuteStore) -> tuple[list[dict], dict]:
    rng = random.Random(args.seed)
    corruptions = [k for k in args.kinds if k in CORRUPTIONS or k == REFUSAL]
    pairs, checks = store_pairs(store, corruptions, rng, args.max_questions, args.assistant_name, args.doc_types) if corruptions \
        else ([], Counter())
    pairs += persona_pairs(args.kinds, rng, args.assistant_name, args.assistant_maker)
    from utils.legal.rag import add_retrieved_articles  # loads the BM25 index: only when asked for

    add_retrieved_articles(pairs, args.with_articles, rng, keep_hits=True)  # a store pair's own article among them
    reject_quoting_given_articles(pairs, rng)
    overlap, heldout = lawbench_filter(args, store), heldout_questions(args.heldout)
    by_kind: dict[str, list[dict]] = {k: [] for k in args.kinds}
    stats = {k: Counter() for k in args.kinds}
    for pair in pairs:
        reason = "excluded_heldout" if pair["instruction"].strip() in heldout else None
        if reason is None and overlap is not None:
            reason = overlap.reason({**pair, "output": pair["chosen"] + "\n" + pair["rejected"]})
        stats[pair["kind"]][reason or "kept"] += 1
        if reason is None:
            by_kind[pair["kind"]].append({k: v for k, v in pair.items() if not k.startswith("_")})
    out = []
    for kind, kept in by_kind.items():
        cap = args.kind_max.get(kind, args.max_per_kind)
        if cap and len(kept) > cap:
            kept = rng.sample(kept, cap)
        stats[kind]["written"] = len(kept)
        out += kept
    rng.shuffle(out)
    return out, {"kinds": {k: dict(v) for k, v in stats.items()}, "checker": dict(checks)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, help="JSONL to write (store) or to append to and resume (model)")
    parser.add_argument("--source", choices=["store", "model"], default="store",
                        help="store: corruption pairs from the statute store; model: rank a model's own answers")
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"store: comma-separated subset of {', '.join(KINDS)}")
    parser.add_argument("--max_per_kind", type=int, default=0, help="store: at most this many pairs per kind (0: all)")
    parser.add_argument("--kind_max", action="append", default=[], metavar="KIND=N",
                        help="store: another cap for one kind (repeatable; 0: all of that kind), e.g. out_of_scope=12")
    parser.add_argument("--assistant_name", default=DEFAULT_NAME, help="identity pairs: the assistant's name")
    parser.add_argument("--assistant_maker", default=DEFAULT_MAKER, help="identity pairs: who made it")
    parser.add_argument("--with_articles", type=float, default=0.0, metavar="SHARE",
                        help="store: share of pairs given the articles --rag retrieves for their question as input "
                             "(for a model trained with the law_rag template and served with --rag; default 0)")
    parser.add_argument("--questions", help="model: questions (.json/.jsonl: instruction or question, input, gold); "
                                            "default: the store's questions with their article as gold")
    parser.add_argument("--max_questions", type=int, default=0,
                        help="use at most this many questions (store: a seeded sample; 0: all)")
    parser.add_argument("--num_samples", type=int, default=4, help="model: answers sampled per question")
    parser.add_argument("--request_batch", type=int, default=4, help="model: questions sent together")
    parser.add_argument("--max_new_tokens", type=int, default=192)
    parser.add_argument("--temperature", type=float, default=0.9, help="model: sampling temperature (> 0)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--heldout", default=str(DEFAULT_HELDOUT),
                        help="questions never used (the alignment figures' held-out set); '' for none")
    parser.add_argument("--lawbench_dir", action="append", help=f"LawBench data to exclude overlaps with (repeatable; "
                                                                  f"default {DEFAULT_LAWBENCH_DIR})")
    parser.add_argument("--no_lawbench_check", action="store_true", help="build without the LawBench overlap filter")
    add_generator_arguments(parser, default_template_mode="template")
    parser.add_argument("--doc_types", default="laws",
                        help="which of the store's documents the items are drawn from: laws (laws.db's laws, the "
                             "default), all (+ judicial interpretations and regulations), or types such as "
                             "法律,司法解释,行政法规 (retrieved articles come from every type either way)")
    args = parser.parse_args(argv)
    try:
        args.doc_types = doc_types_option(args.doc_types)
    except StatuteError as e:
        parser.error(str(e))
    args.kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = [k for k in args.kinds if k not in KINDS]
    if unknown or not args.kinds:
        parser.error(f"--kinds: unknown kind(s) {unknown}; choose from {', '.join(KINDS)}")
    for name in ("max_per_kind", "max_questions"):
        if getattr(args, name) < 0:
            parser.error(f"--{name} must be >= 0")
    args.kind_max = kind_caps(parser, args.kind_max, args.kinds)
    if not 0 <= args.with_articles <= 1:
        parser.error(f"--with_articles {args.with_articles}: must be in [0, 1]")
    if args.num_samples < 2 or args.request_batch < 1:
        parser.error("--num_samples must be >= 2 and --request_batch >= 1")
    if args.source == "model" and args.temperature <= 0:
        parser.error("--temperature must be > 0 to sample different answers")
    return args


def main(argv: list[str] | None = None) -> int:
    """The command line: exit status 0, or 1 with one line on stderr (utils/common/entry.py)."""
    return run_entry("preference_data", lambda: _run(argv))


def _run(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    store = StatuteStore.load()
    if args.source == "store":
        pairs, stats = build_store(args, store)
        count = write_jsonl(args.output, pairs)
        for kind, s in stats["kinds"].items():
            print(f"[preference_data] {kind:<20} " + ", ".join(f"{k} {v}" for k, v in sorted(s.items())))
        if stats["checker"]:
            print(f"[preference_data] dropped by the checker: {stats['checker']}")
        print(f"[preference_data] wrote {count} pairs to {args.output}")
        return 0
    if args.questions:
        questions = read_questions(Path(args.questions), store)
    else:
        rng = random.Random(args.seed)
        questions = [{"instruction": q["instruction"], "input": "", "gold": [q["article"].citation]}
                     for q in store_questions(store, rng, args.doc_types)]
        rng.shuffle(questions)
    heldout = heldout_questions(args.heldout)
    overlap = lawbench_filter(args, store)
    kept = [q for q in questions if q["instruction"].strip() not in heldout and (
        overlap is None or overlap.max_overlap(q["instruction"] + "\n" + q["input"]) < overlap.threshold)]
    if len(kept) < len(questions):
        print(f"[preference_data] {len(questions) - len(kept)} questions left out (held-out set or LawBench)")
    kept = kept[:args.max_questions] if args.max_questions else kept
    counts = on_policy_pairs(args, kept, store, generator_from_args(args))
    print("[preference_data] sampled answers by tier: " + ", ".join(f"{t} {counts[t]}" for t in sorted(counts)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
