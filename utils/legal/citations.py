"""Find the statute citations in a text and verify each against the statute store.

Forms found: 《刑法》第二百六十四条, 依据劳动合同法第82条第二款, 中华人民共和国民法典第一千二百五十四条,
第一百三十三条之一, and a bare 第N条 after a law was named (「刑法第264条、第267条」, 「…根据民法典，
第一千零七十九条规定…」: the law carries forward; 本法/该法/同法 too). A law named in 《》 without an
article is reported as well (「依照《合同法》」), and so is any mention of a law that is not in force.

Each citation gets a :class:`Verdict`: ``verified`` (the article exists in a law in force), ``law_in_force``
(a law in force named without an article: nothing more to check, and not a citation of a provision),
``not_found`` (no such article or paragraph), ``repealed`` (the law is not in force, or the article was
deleted), or ``unknown_law``. When the text quotes the article next to the citation (「…第N条规定：“…”」 or
「“…”（《刑法》第N条）」), the quote is compared with the article text (share of the quote's characters
found in order in the article, in runs of 3 or more, difflib) and ``quote_matches`` says whether it reaches ``QUOTE_THRESHOLD``.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections import Counter
from dataclasses import asdict, dataclass

from utils.legal.documents import SHORT_TITLES
from utils.legal.numerals import cn_to_int, is_canonical, readings
from utils.legal.statutes import ABBREVIATIONS, CN_NUM, KNOWN_REPEALED, PRC, Law, StatuteStore, article_label

QUOTE_THRESHOLD = 0.8
VERDICTS = ("verified", "law_in_force", "not_found", "repealed", "unknown_law", "not_in_store", "malformed_number")
PROBLEMS = ("not_found", "repealed", "unknown_law", "malformed_number")  # the verdicts that say the text is wrong
# A number with what it counts (三年, 五万元, 百分之三十, 二倍, 第十条), and the words that bound it: a quote must keep each
_NUMBER_EXPR = re.compile(rf"(?:百分之|千分之)?[{CN_NUM}万亿\d.]+(?:年|个月|月|日|天|小时|元|万元|亿元|倍|周岁|岁|人|次|条|款|项|%|‰)"
                          r"|以上|以下|不满|超过|不足|以内")
_NUM = rf"(?:[{CN_NUM}]+|\d+)"
_ARTICLE = re.compile(
    rf"第\s*(?P<num>{_NUM})\s*条(?:\s*之\s*(?P<suf>{_NUM}))?(?:\s*第\s*(?P<para>{_NUM})\s*款)?"
    rf"(?:\s*第\s*[（(]?(?P<item>{_NUM})[)）]?\s*项)?"
)
# A document the store does not hold, named as such documents are: not "unknown", just not checked
_DOCUMENT_LIKE = re.compile(r"^(?:最高人民(?:法院|检察院)|国务院|.{2,40}(?:条例|细则|办法|规则|规定|解释|批复|决定)(?:[（(][一二三四五六七八九十]+[)）])?$)")
_SAME_LAW = re.compile(r"(?:本法|该法|同法|此法)\s*$")
_GAP = re.compile(r"^[\s的]*$")  # what may sit between a law's name and 第N条
_UNKNOWN_NAME = re.compile(r"([\u4e00-\u9fff]{2,20}法)\s*$")
_STOP = re.compile(r".*(?:依据|根据|按照|依照|违反|适用|参照|援引|引用|对照|以及|和|与|及|或|即|是|按|依)")
_QUOTE_AFTER = re.compile(r"^\s*(?:的)?(?:中)?(?:明确)?(?:规定|指出|写道|载明)?\s*[：:，,]?\s*[“\"「『]([^”\"」』]{2,500})[”\"」』]")
_QUOTE_BEFORE = re.compile(r"[“\"「『]([^“”\"「」『』]{2,500})[”\"」』]\s*[（(]?\s*(?:见|参见|出自|依据)?\s*$")


@dataclass
class Verdict:
    text: str  # the citation as written
    start: int
    end: int
    law_written: str  # the law's name as written ('' when carried forward)
    law_name: str | None  # the resolved full name
    number: int | None
    suffix: int
    paragraph: int | None
    status: str  # one of VERDICTS
    in_force: bool | None
    message: str
    inferred_law: bool = False  # the law was named earlier in the text, not next to this article
    article_text: str | None = None
    quote: str | None = None
    quote_similarity: float | None = None
    quote_matches: bool | None = None  # similar enough and every number kept (numbers_changed None)
    numbers_changed: str | None = None
    # Does the article fit the question? Set by utils/legal/rag.finalize, which knows the question (None here):
    # the trained retriever's probability (relevance) clears its threshold, or without one, BM25's top 5 hold it
    relevant: bool | None = None
    relevance: float | None = None

    @property
    def confirmed(self) -> bool:
        """The green tick: the article exists and is in force, its quote (if any) is faithful, and it fits the
        question (relevant is True, so only a citation judged against its question can be confirmed)."""
        return self.status == "verified" and self.quote_matches is not False and self.relevant is True

    def to_dict(self) -> dict:
        return {**asdict(self), "confirmed": self.confirmed}


@dataclass(frozen=True)
class _Mention:
    start: int
    end: int
    written: str
    law: Law | None
    bracketed: bool


def _name_regex(name: str) -> str:
    """A name as a regex that also matches it written with 〈〉 or 《》 (or neither) around a law inside it, with or
    without 中华人民共和国 there, and 、 or a space (or nothing) between two issuers."""
    parts = re.split(r"[《〈](?:中华人民共和国)?([^《》〈〉]+)[》〉]", name)
    out = []
    for i, part in enumerate(parts):
        if i % 2:  # a law named inside the title
            out.append(rf"[《〈]?(?:中华人民共和国)?{re.escape(part)}[》〉]?")
        else:
            out.append(r"[、\s]?".join(re.escape(piece) for piece in re.split(r"[、\s]", part)))
    return "".join(out)


@functools.lru_cache(maxsize=4)
def _name_pattern(store_id: int, names: tuple[str, ...]) -> re.Pattern:
    # Longest first, so 劳动合同法 wins over 合同法; not followed by 律/规/学… (合同法律关系 names no law).
    alternation = "|".join(_name_regex(n) for n in sorted(set(names), key=len, reverse=True))
    return re.compile(rf"(?:中华人民共和国)?(?:{alternation})(?![律规学院官理则典])")


def _bracketed(text: str):
    """(start, end, name) of every outermost 《…》, brackets inside it (《…〈民法典〉…》, 《…《民法典》…》) kept."""
    depth, start = 0, 0
    for i, ch in enumerate(text):
        if ch == "《":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "》" and depth:
            depth -= 1
            if depth == 0 and 1 <= i - start - 1 <= 120 and "\n" not in text[start:i]:
                yield start, i + 1, text[start + 1:i]
        elif ch == "\n":
            depth = 0


def _mentions(text: str, store: StatuteStore) -> list[_Mention]:
    names = [n for law in store.laws for n in (law.name, law.short_name) if len(n) >= 2]
    names += list(KNOWN_REPEALED) + list(ABBREVIATIONS) + list(SHORT_TITLES)
    found: list[_Mention] = []
    taken = [False] * (len(text) + 1)
    for start, end, name in _bracketed(text):
        found.append(_Mention(start, end, name, store.resolve_law(name), True))
        for i in range(start, end):
            taken[i] = True
    for m in _name_pattern(id(store), tuple(names)).finditer(text):
        if not taken[m.start()]:
            found.append(_Mention(m.start(), m.end(), m.group(), store.resolve_law(m.group()), False))
    # a law named inside a longer name (民法典 in 「最高人民法院关于适用《民法典》有关担保制度的解释」) is part of it
    found = [x for x in found if not any(y.start <= x.start and x.end <= y.end and (y.start, y.end) != (x.start, x.end)
                                         for y in found)]
    return sorted(found, key=lambda mention: mention.start)


def _quote(text: str, start: int, end: int) -> str | None:
    after = _QUOTE_AFTER.match(text[end:end + 520])
    if after:
        return after.group(1)
    before = _QUOTE_BEFORE.search(text[max(0, start - 520):start])
    return before.group(1) if before else None


def quote_similarity(quote: str, article_text: str) -> float:
    """Share of the quote's characters found, in order and in runs of ≥ 3, in the article (punctuation ignored)."""
    strip = functools.partial(re.sub, r"[\s，。；：、,.;:“”\"（）()]", "")
    q, a = strip(quote), strip(article_text)
    if not q:
        return 0.0
    matcher = difflib.SequenceMatcher(None, q, a, autojunk=False)
    # Runs shorter than 3 characters (「的」, 「处」, 「他人」) match any article by chance: only phrases count.
    return sum(b.size for b in matcher.get_matching_blocks() if b.size >= min(3, len(q))) / len(q)


def _number_expressions(text: str, start: int, end: int) -> list[str]:
    """The number expressions of ``text`` that overlap ``text[start:end]``."""
    return [m.group() for m in _NUMBER_EXPR.finditer(text) if m.start() < max(end, start + 1) and m.end() > start]


def numbers_kept(quote: str, article_text: str) -> str | None:
    """None when every number of the quote — terms of years, amounts, counts, 以上/以下 — is the article's at that
    place; else what changed (「五年以上十年以下」 where the article has 「三年以下」). The quote is aligned with the article
    (difflib, per stretch between ellipses): a number the quote changed, dropped or added, or article text holding a
    number that the quote skips inside a stretch, fails it. Character similarity alone never passes a changed number."""
    strip = functools.partial(re.sub, r"[\s，。；：、,;:“”\"（）()]", "")
    article = strip(article_text)
    for stretch in re.split(r"…+|\.{3,}|⋯+", strip(quote)):
        if len(stretch) < 2:
            continue
        matcher = difflib.SequenceMatcher(None, stretch, article, autojunk=False)
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            if tag == "equal" or (tag == "insert" and i1 in (0, len(stretch))):
                continue  # the quote is an excerpt: article text before or after it does not count
            ours = _number_expressions(stretch, max(0, i1 - 1), i2) if tag != "insert" else []
            theirs = _number_expressions(article, max(0, j1 - 1), j2) if tag != "delete" else []
            if ours or theirs:
                return f"「{stretch[max(0, i1 - 4):i2 + 4]}」 where the article has 「{article[max(0, j1 - 4):min(j2, j1 + 24) + 4]}」"
    return None


def _verify(law: Law | None, written: str, number: int | None, suffix: int, paragraph: int | None,
            store: StatuteStore) -> tuple[str, bool | None, str, str | None]:
    """(status, in_force, message, article text)."""
    if law is None:
        if _DOCUMENT_LIKE.match(written.strip("《》 ")):
            return "not_in_store", None, f"{written!r} is not in the statute store: not checked", None
        return "unknown_law", None, f"unknown law {written!r}: neither in the statute store nor a known repealed law", None
    if not law.in_force:
        why = law.note or f"marked {law.status} in laws.db"
        return "repealed", False, f"{law.name} is not in force ({why})", None
    if number is None:
        return "law_in_force", True, f"{law.name} is in force (no article cited)", None
    article = store.lookup(law, number, suffix)
    label = article_label(number, suffix)
    if article is None:
        return "not_found", True, f"{law.name} has no {label}", None
    if article.is_deleted:
        return "repealed", False, f"{law.name} {label} was deleted by an amendment", article.text
    if paragraph is not None and paragraph > len(article.paragraphs):
        return "not_found", True, f"{label} has {len(article.paragraphs)} paragraph(s), not 第{paragraph}款", article.text
    return "verified", True, f"{law.name} {label} exists and is in force", article.text


def check_citations(text: str, store: StatuteStore | None = None) -> list[Verdict]:
    """Every citation in ``text`` with its verdict, in order of appearance."""
    store = store or StatuteStore.load()
    mentions = _mentions(text, store)
    verdicts: list[Verdict] = []
    used: set[int] = set()
    for m in _ARTICLE.finditer(text):
        before = [x for x in mentions if x.end <= m.start()]
        adjacent = before[-1] if before and _GAP.match(text[before[-1].end:m.start()]) else None
        inferred = False
        if adjacent is not None:
            law, written, start = adjacent.law, adjacent.written, adjacent.start
            used.add(adjacent.start)
        elif (unknown := _UNKNOWN_NAME.search(text[max(0, m.start() - 22):m.start()])) and not _SAME_LAW.search(
                text[:m.start()]):
            name = unknown.group(1)
            written = name[name.index(PRC):] if PRC in name else _STOP.sub("", name)
            law, start = store.resolve_law(written), m.start() - len(unknown.group(0)) + unknown.group(1).find(written)
        elif before:
            law, written, start, inferred = before[-1].law, "", m.start(), True
        else:
            continue  # a bare 第N条 with no law named before it: nothing to check it against
        number = cn_to_int(m.group("num"))
        suffix = cn_to_int(m.group("suf")) if m.group("suf") else 0
        paragraph = cn_to_int(m.group("para")) if m.group("para") else None
        named = before[-1].written if inferred else written  # a carried-forward law: the name it was given
        status, in_force, message, article_text = _verify(law, named, number, suffix, paragraph, store)
        if not is_canonical(m.group("num")):  # 第六百八条 is not 第六百零八条: never read as another article
            meant = [article_label(n) for n in readings(m.group("num"))]
            status, article_text, number = "malformed_number", None, None
            message = (f"第{m.group('num')}条 is not a well-formed article number"
                       + (f" (meant {' or '.join(meant)}?)" if meant else ""))
        verdict = Verdict(text[start:m.end()], start, m.end(), written, law.name if law else None, number, suffix,
                          paragraph, status, in_force, message, inferred, article_text)
        quote = _quote(text, start, m.end())
        if quote and article_text:
            verdict.quote, verdict.quote_similarity = quote, round(quote_similarity(quote, article_text), 3)
            verdict.numbers_changed = numbers_kept(quote, article_text)
            verdict.quote_matches = verdict.quote_similarity >= QUOTE_THRESHOLD and verdict.numbers_changed is None
            if verdict.quote_similarity < QUOTE_THRESHOLD:
                verdict.message += f"; the quoted text does not match the article (similarity {verdict.quote_similarity})"
            elif verdict.numbers_changed:
                verdict.message += f"; the quote changes a number: {verdict.numbers_changed}"
        verdicts.append(verdict)
    for x in mentions:  # laws named without an article: bracketed ones, and any that is not in force
        if x.start in used or not (x.bracketed or (x.law is not None and not x.law.in_force)):
            continue
        if any(v.start == x.start for v in verdicts):
            continue
        status, in_force, message, _ = _verify(x.law, x.written, None, 0, None, store)
        verdicts.append(Verdict(text[x.start:x.end], x.start, x.end, x.written, x.law.name if x.law else None, None, 0,
                                None, status, in_force, message))
    return sorted(verdicts, key=lambda v: v.start)


def summarize(verdicts: list[Verdict]) -> dict[str, int]:
    """Counts per status, plus ``quote_mismatch`` (verified, quote unfaithful), ``not_relevant`` (verified, judged not
    to fit the question) and ``confirmed`` (:attr:`Verdict.confirmed`: exists, in force, faithful and relevant)."""
    counts = Counter(v.status for v in verdicts)
    out = {status: counts.get(status, 0) for status in VERDICTS}
    out["quote_mismatch"] = sum(v.quote_matches is False for v in verdicts)
    out["not_relevant"] = sum(v.status == "verified" and v.relevant is False for v in verdicts)
    out["confirmed"] = sum(v.confirmed for v in verdicts)
    return out
