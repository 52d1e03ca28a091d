"""Legal documents beyond laws.db's laws — judicial interpretations, State Council regulations, anything in the same
shape — in one JSONL format, and the importer of LawRefBook's markdown (github.com/LawRefBook/Laws).

**The documents format** (one JSON object per line; ``.jsonl`` or xz-compressed ``.jsonl.xz``)::

    {"title": "最高人民法院关于审理民间借贷案件适用法律若干问题的规定", "doc_type": "司法解释",
     "issuer": "最高人民法院", "promulgated": "2020-12-29", "effective": "2021-01-01", "version": "2020-12-29",
     "status": "in_force", "source": "LawRefBook/Laws@2f4c5c2 司法解释/….md",
     "articles": [{"number": "第二十五条", "text": "…", "part": "", "chapter": "", "section": ""}]}

``doc_type`` is one of ``DOC_TYPES``; dates are real dates ``YYYY-MM-DD`` or ""; ``status`` is ``in_force`` (it needs
its articles), ``superseded`` (an older version of a title that has a newer one: known, its articles not stored) or
``repealed``; an article's ``number`` is 第N条 / 第N条之M as printed, once per document (全文 for a document without
articles, which is cited as a whole), its ``text`` not empty. :func:`read_documents` checks every line (file:line
errors).

**LawRefBook's markdown** (its 法律法规模版.md): line 1 ``# title``; dated events (「2020年12月23日 最高人民法院审判
委员会第1823次会议通过」, 「2021年1月1日 施行」) up to ``<!-- INFO END -->``; ``##``/``###`` headings for 编/章/节;
one paragraph per line, an article starting 「第N条 」 and running on over the following paragraphs. Dirt handled,
each rule tested (tests/test_documents.py): a heading written as a plain paragraph (「第二章 借贷」, or a bare
「附 则」 / 「法律责任」 followed by an article) is a heading; zero-width spaces and the 「续表」 lines of tables that
were not carried over are dropped; an
article number printed twice in a document keeps its first text (counted); a version filed twice is kept once (the
copy with more articles); several files of one title are versions —
the newest (its file-name date, else its latest event) is in force, the others superseded; a 「（试行）」 title is
superseded by the same title without it when that one is newer.
"""

from __future__ import annotations

import datetime
import json
import lzma
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from utils.common.datafiles import DataError

DOC_TYPES = ("法律", "行政法规", "司法解释", "部门规章", "地方性法规", "其他")
STATUSES = ("in_force", "superseded", "repealed")
FOLDER_TYPES = {"司法解释": "司法解释", "行政法规": "行政法规", "部门规章": "部门规章", "地方性法规": "地方性法规"}
_CN = "零〇一二两三四五六七八九十百千"
_ARTICLE_START = re.compile(rf"^(第[{_CN}\d]+条(?:之[{_CN}\d]+)?)[\s\u3000]+(.*)$", re.S)
_HEADING = re.compile(rf"^第[{_CN}\d]+(编|分编|章|节)(?:[\s\u3000]+.*)?$")
_ARTICLE_NUMBER = re.compile(rf"第[{_CN}\d]+条(?:之[{_CN}\d]+)?")
WHOLE = "全文"  # the one "article" of a document without articles (a reply, a decision)
_BARE_HEADING = re.compile(r"^[\u4e00-\u9fff ]{2,12}$")  # 「附 则」, 「法律责任」 without their 第N章 line
_EVENT = re.compile(r"^(\d{4})年(\d{1,2})月(\d{1,2})日\s*(.*)$")
_FILE_DATE = re.compile(r"\((\d{4}-\d{2}-\d{2})\)$")
_PROMULGATED = re.compile(r"公布|发布|颁布|印发|通过|修正|修订|修改")  # this version's text was adopted
_EFFECTIVE = re.compile(r"施行|实施|生效")
TRIAL = "（试行）"


@dataclass
class Document:
    """One version of a document; ``articles``: dicts with number, text, part, chapter, section."""

    title: str
    doc_type: str
    issuer: str = ""
    promulgated: str = ""
    effective: str = ""
    version: str = ""
    status: str = "in_force"
    source: str = ""
    articles: list[dict] = field(default_factory=list)
    duplicates: int = 0  # article numbers printed twice (the first text kept); not written

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in ("title", "doc_type", "issuer", "promulgated", "effective", "version",
                                               "status", "source", "articles")}


def issuer_of(title: str, doc_type: str) -> str:
    """The issuing body, from the title (interpretations name it) or the type (regulations: the State Council)."""
    court, procuratorate = "最高人民法院" in title[:12], "最高人民检察院" in title[:20]
    if court and procuratorate:
        return "最高人民法院、最高人民检察院"
    if court or (doc_type == "司法解释" and title.startswith(("关于", "人民法院"))):
        return "最高人民法院"
    if procuratorate or title.startswith("人民检察院"):
        return "最高人民检察院"
    return "国务院" if doc_type == "行政法规" else ""


def parse_lawrefbook(text: str, doc_type: str, source: str = "", file_date: str = "") -> Document:
    """One LawRefBook markdown file → a Document (status in_force: versions are settled by :func:`settle_versions`).
    Raises DataError (naming ``source``) when the file has no ``# title`` line or no ``<!-- INFO END -->``."""
    head, sep, body = text.partition("<!-- INFO END -->")
    if not sep:
        raise DataError(f"{source}: no '<!-- INFO END -->' line (not LawRefBook's format?)")
    lines = [line.strip() for line in head.splitlines() if line.strip() and not line.startswith("---")
             and not line.startswith("bookHidden")]
    titles = [line[2:].strip() for line in lines if line.startswith("# ")]
    if not titles:
        raise DataError(f"{source}: no '# title' line before <!-- INFO END -->")
    promulgated = effective = latest = ""
    for line in lines:
        m = _EVENT.match(line)
        if not m:
            continue
        date = f"{int(m.group(1)):04d}-{int(m.group(2)):02d}-{int(m.group(3)):02d}"
        latest = max(latest, date)
        if _EFFECTIVE.search(m.group(4)):
            effective = max(effective, date)
        elif _PROMULGATED.search(m.group(4)):
            promulgated = max(promulgated, date)
    doc = Document(titles[0], doc_type, issuer_of(titles[0], doc_type), promulgated, effective,
                   file_date or latest, source=source)
    place = {"part": titles[1] if len(titles) > 1 else "", "chapter": "", "section": ""}
    seen, current, pending = set(), None, None
    for raw in body.splitlines():
        line = raw.replace("\u200b", "").strip().replace("\u3000", " ")
        if not line or line.startswith("<!--") or line in ("续表", "续 表"):  # the tables themselves are not there
            continue
        heading = line.lstrip("#").strip() if line.startswith("#") else line
        kind = _HEADING.match(heading)
        new_article = _ARTICLE_START.match(line)
        if pending is not None:  # a bare short line: a heading when a heading or an article follows it
            if new_article or kind or line.startswith("#"):
                place["chapter"], place["section"] = pending, ""
            elif current is not None:
                current["text"] += "\n" + pending
            pending = None
        if current is not None and not new_article and not kind and _BARE_HEADING.match(line):
            pending = line
            continue
        if line.startswith("#") or (kind and len(heading) <= 40 and "。" not in heading):
            level = {"编": "part", "分编": "part", "章": "chapter", "节": "section"}.get(kind.group(1) if kind else "",
                                                                                 "chapter")
            place[level] = heading
            if level == "part":
                place["chapter"] = place["section"] = ""
            elif level == "chapter":
                place["section"] = ""
            current = None
            continue
        m = new_article
        if m:
            number = m.group(1)
            if number in seen:
                doc.duplicates += 1
                current = None  # its paragraphs belong to the duplicate: dropped with it
                continue
            seen.add(number)
            current = {"number": number, "text": m.group(2).strip(), **place}
            doc.articles.append(current)
        elif current is not None:
            current["text"] += "\n" + line
    if pending is not None and current is not None:
        current["text"] += "\n" + pending
    if not doc.articles and body.strip():  # a reply or decision without articles: cited as a whole
        text = "\n".join(line.strip() for line in body.splitlines() if line.strip() and not line.startswith("#"))
        doc.articles.append({"number": WHOLE, "text": text, **place})
    return doc


def title_key(title: str) -> str:
    """What makes two titles one document: spaces, 、 between issuers, 〈〉 for 《》 and 中华人民共和国 inside
    the brackets do not count."""
    key = re.sub(r"[\s、]", "", title).replace("〈", "《").replace("〉", "》")
    return key.replace("《中华人民共和国", "《")


def settle_versions(documents: list[Document]) -> list[Document]:
    """Mark all but the newest version of each title superseded (and a 「（试行）」 title superseded by a newer one
    without it); returns the documents, newest version of each title first. ``documents`` are changed in place."""
    groups: dict[str, list[Document]] = {}
    for doc in documents:
        groups.setdefault(title_key(doc.title).replace(TRIAL, ""), []).append(doc)
    out = []
    for versions in groups.values():
        versions.sort(key=lambda d: (d.version, TRIAL not in d.title), reverse=True)
        for older in versions[1:]:
            if older.status == "in_force":
                older.status = "superseded"
        out.extend(versions)
    return out


def merge_documents(files: list[list[Document]]) -> list[Document]:
    """The documents of several files as one set: a version (title and date) in a later file replaces the same version
    in an earlier one (the user's ``data/statutes`` after the shipped file), then :func:`settle_versions`."""
    merged: dict[tuple, Document] = {}
    for documents in files:
        for doc in documents:
            merged[(title_key(doc.title), doc.version)] = doc
    return settle_versions(list(merged.values()))


def lawrefbook_files(root: str | Path, folders: tuple[str, ...] = tuple(FOLDER_TYPES)) -> list[tuple[Path, str]]:
    """(file, folder) of every ``*.md`` file (but ``_index.md``) in ``root``'s ``folders``; DataError when no folder
    is there."""
    root = Path(root)
    present = [f for f in folders if (root / f).is_dir()]
    if not present:
        raise DataError(f"{root}: none of the folders {', '.join(folders)} (a checkout of LawRefBook/Laws?)")
    return [(path, folder) for folder in present for path in sorted((root / folder).rglob("*.md"))
            if not path.name.startswith("_")]


def import_lawrefbook(root: str | Path, folders: tuple[str, ...] = tuple(FOLDER_TYPES), source: str = "LawRefBook/Laws",
                      progress=None) -> tuple[list[Document], dict]:
    """The files of :func:`lawrefbook_files` → Documents with versions settled, and figures (files, documents per
    type and status, articles, duplicates). ``progress(n)`` is called after each file."""
    root, documents = Path(root), []
    for path, folder in lawrefbook_files(root, folders):
        m = _FILE_DATE.search(path.stem)
        documents.append(parse_lawrefbook(path.read_text(encoding="utf-8"), FOLDER_TYPES[folder],
                                          f"{source} {path.relative_to(root)}", m.group(1) if m else ""))
        if progress is not None:
            progress(1)
    files = len(documents)
    unique: dict[tuple, Document] = {}  # the same version filed twice (in two folders): one copy, the fuller
    for doc in documents:
        key = (title_key(doc.title), doc.version)
        if key not in unique or len(doc.articles) > len(unique[key].articles):
            unique[key] = doc
    documents = settle_versions(list(unique.values()))
    stats = {"files": files, "duplicate_files_dropped": files - len(documents),
             "duplicate_articles_dropped": sum(d.duplicates for d in documents),
             "by_type_status": dict(Counter(f"{d.doc_type}/{d.status}" for d in documents)),
             "articles_in_force": sum(len(d.articles) for d in documents if d.status == "in_force")}
    return documents, stats


def _open(path: Path, mode: str):
    return lzma.open(path, mode + "t", encoding="utf-8") if path.suffix == ".xz" else open(path, mode, encoding="utf-8")


def write_documents(documents: list[Document], path: str | Path, with_superseded_articles: bool = False) -> int:
    """Write the documents format (atomically); superseded versions without their articles unless asked."""
    import os

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}{''.join(path.suffixes[-1:])}")
    with _open(tmp, "w") as f:
        for doc in documents:
            record = doc.to_json()
            if doc.status != "in_force" and not with_superseded_articles:
                record["articles"] = []
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return len(documents)


def read_documents(path: str | Path) -> list[Document]:
    """The documents of a file in the documents format; DataError naming file:line for a bad record."""
    path, out = Path(path), []
    try:
        with _open(path, "r") as f:
            for number, line in enumerate(f, start=1):
                if line.strip():
                    out.append(_document(json.loads(line), f"{path}:{number}"))
    except (OSError, lzma.LZMAError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read: {e}") from e
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{number}: not JSON: {e}") from e
    return out


def _document(record: dict, where: str) -> Document:
    if not isinstance(record, dict) or not isinstance(record.get("title"), str) or not record["title"].strip():
        raise DataError(f"{where}: needs a non-empty 'title'")
    if record.get("doc_type") not in DOC_TYPES:
        raise DataError(f"{where}: 'doc_type' must be one of {', '.join(DOC_TYPES)}, got {record.get('doc_type')!r}")
    status = record.get("status", "in_force")
    if status not in STATUSES:
        raise DataError(f"{where}: 'status' must be one of {', '.join(STATUSES)}, got {status!r}")
    for key in ("promulgated", "effective", "version"):
        if record.get(key):
            try:
                datetime.date.fromisoformat(str(record[key]))
            except ValueError:
                raise DataError(f"{where}: '{key}' must be a date YYYY-MM-DD or empty, got {record[key]!r}") from None
    articles = record.get("articles", [])
    if not isinstance(articles, list):
        raise DataError(f"{where}: 'articles' must be a list")
    if status == "in_force" and not articles:
        raise DataError(f"{where}: a document in force needs its 'articles' (only superseded or repealed ones may "
                        "come without)")
    seen = set()
    for i, article in enumerate(articles):
        if not isinstance(article, dict) or not isinstance(article.get("number"), str) or \
                not isinstance(article.get("text"), str) or not article["text"].strip():
            raise DataError(f"{where}: articles[{i}] needs a 'number' string and a non-empty 'text'")
        if not (_ARTICLE_NUMBER.fullmatch(article["number"]) or article["number"] == WHOLE):
            raise DataError(f"{where}: articles[{i}]: number {article['number']!r} is not 第N条 / 第N条之M "
                            f"(or {WHOLE} for a document without articles): it could never be cited")
        if article["number"] in seen:
            raise DataError(f"{where}: articles[{i}]: {article['number']} appears twice")
        seen.add(article["number"])
    return Document(record["title"].strip(), record["doc_type"], record.get("issuer", ""),
                    record.get("promulgated", ""), record.get("effective", ""), record.get("version", ""),
                    record.get("status", "in_force"), record.get("source", ""),
                    [{"part": "", "chapter": "", "section": "", **a} for a in articles])


# Short names by which judgments, lawyers and users cite judicial interpretations and regulations → the full title
# (any form: 《中华人民共和国X》 or 《X》 inside). Collected by hand from the Supreme People's Court's own usage (its
# documents' 「（以下简称《…》）」 and the 理解与适用 series) and from how LeCoQA's train-split questions name them
# (「《民间借贷司法解释》关于LPR4倍利率保护上限的规定」); tests/test_documents.py checks each names a document the
# shipped store holds. Keys are title_key()-normalised when looked up (spaces and 〈〉 do not matter).
_SPC = "最高人民法院关于"
SHORT_TITLES = {
    **dict.fromkeys(("民间借贷司法解释", "民间借贷规定", "民间借贷解释", "民间借贷案件规定"),
                    _SPC + "审理民间借贷案件适用法律若干问题的规定"),
    **dict.fromkeys(("担保制度解释", "民法典担保制度解释", "担保制度司法解释", "民法典担保解释"),
                    _SPC + "适用《中华人民共和国民法典》有关担保制度的解释"),
    **dict.fromkeys(("劳动争议解释（一）", "劳动争议司法解释（一）", "劳动争议解释一"),
                    _SPC + "审理劳动争议案件适用法律问题的解释（一）"),
    **dict.fromkeys(("民诉法解释", "民事诉讼法解释", "民诉法司法解释", "民诉解释"),
                    _SPC + "适用《中华人民共和国民事诉讼法》的解释"),
    **dict.fromkeys(("刑诉法解释", "刑事诉讼法解释", "刑诉解释"), _SPC + "适用《中华人民共和国刑事诉讼法》的解释"),
    **dict.fromkeys(("行诉法解释", "行政诉讼法解释"), _SPC + "适用《中华人民共和国行政诉讼法》的解释"),
    **dict.fromkeys(("婚姻家庭编解释（一）", "婚姻家庭编司法解释（一）", "民法典婚姻家庭编解释（一）"),
                    _SPC + "适用《中华人民共和国民法典》婚姻家庭编的解释（一）"),
    **dict.fromkeys(("继承编解释（一）", "民法典继承编解释（一）"), _SPC + "适用《中华人民共和国民法典》继承编的解释（一）"),
    **dict.fromkeys(("物权编解释（一）", "民法典物权编解释（一）"), _SPC + "适用《中华人民共和国民法典》物权编的解释（一）"),
    **dict.fromkeys(("总则编解释", "民法典总则编解释"), _SPC + "适用《中华人民共和国民法典》总则编若干问题的解释"),
    **dict.fromkeys(("合同编通则解释", "民法典合同编通则解释"), _SPC + "适用《中华人民共和国民法典》合同编通则若干问题的解释"),
    **dict.fromkeys(("建设工程施工合同解释（一）", "建工解释（一）", "建设工程司法解释（一）"),
                    _SPC + "审理建设工程施工合同纠纷案件适用法律问题的解释（一）"),
    **dict.fromkeys(("旅游纠纷规定", "旅游纠纷司法解释"), _SPC + "审理旅游纠纷案件适用法律若干问题的规定"),
    **dict.fromkeys(("人身损害赔偿解释", "人身损害赔偿司法解释"), _SPC + "审理人身损害赔偿案件适用法律若干问题的解释"),
    **dict.fromkeys(("精神损害赔偿解释", "精神损害赔偿司法解释"), _SPC + "确定民事侵权精神损害赔偿责任若干问题的解释"),
    **dict.fromkeys(("民事证据规定", "民事诉讼证据规定", "证据规定"), _SPC + "民事诉讼证据的若干规定"),
    **dict.fromkeys(("医疗损害责任解释", "医疗损害司法解释"), _SPC + "审理医疗损害责任纠纷案件适用法律若干问题的解释"),
    **dict.fromkeys(("道路交通事故损害赔偿解释", "交通事故司法解释", "道交损害赔偿解释"),
                    _SPC + "审理道路交通事故损害赔偿案件适用法律若干问题的解释"),
    **dict.fromkeys(("夫妻债务解释", "夫妻债务司法解释"), _SPC + "审理涉及夫妻债务纠纷案件适用法律有关问题的解释"),
    **dict.fromkeys(("买卖合同解释", "买卖合同司法解释"), _SPC + "审理买卖合同纠纷案件适用法律问题的解释"),
    **dict.fromkeys(("商品房买卖合同解释", "商品房买卖合同司法解释"), _SPC + "审理商品房买卖合同纠纷案件适用法律若干问题的解释"),
    **dict.fromkeys(("城镇房屋租赁合同解释", "房屋租赁合同司法解释"), _SPC + "审理城镇房屋租赁合同纠纷案件具体应用法律若干问题的解释"),
    **dict.fromkeys(("融资租赁合同解释",), _SPC + "审理融资租赁合同纠纷案件适用法律问题的解释"),
    **dict.fromkeys(("诉讼时效规定", "诉讼时效司法解释"), _SPC + "审理民事案件适用诉讼时效制度若干问题的规定"),
    **dict.fromkeys(("食品药品纠纷规定",), _SPC + "审理食品药品纠纷案件适用法律若干问题的规定"),
    **dict.fromkeys(("驰名商标解释",), _SPC + "审理涉及驰名商标保护的民事纠纷案件应用法律若干问题的解释"),
    **dict.fromkeys(("交通肇事解释", "交通肇事司法解释"), _SPC + "审理交通肇事刑事案件具体应用法律若干问题的解释"),
    **dict.fromkeys(("盗窃解释", "盗窃司法解释"), "最高人民法院、最高人民检察院关于办理盗窃刑事案件适用法律若干问题的解释"),
    **dict.fromkeys(("诈骗解释", "诈骗司法解释"), "最高人民法院、最高人民检察院关于办理诈骗刑事案件具体应用法律若干问题的解释"),
    **dict.fromkeys(("公司法解释（三）", "公司法司法解释（三）", "公司法司法解释三"),
                    _SPC + "适用《中华人民共和国公司法》若干问题的规定（三）"),
    **dict.fromkeys(("公司法解释（四）", "公司法司法解释（四）", "公司法司法解释四"),
                    _SPC + "适用《中华人民共和国公司法》若干问题的规定（四）"),
    **dict.fromkeys(("保险法解释（二）", "保险法司法解释（二）", "保险法司法解释二"),
                    _SPC + "适用《中华人民共和国保险法》若干问题的解释（二）"),
}
# How the shorter forms of the same titles read: （一） and 一 alike
SHORT_TITLES.update({k.replace("（", "").replace("）", ""): v for k, v in list(SHORT_TITLES.items()) if "（" in k})
