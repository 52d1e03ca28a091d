"""Statute facts that instruction and preference data are built from: which articles are worth teaching, a
chapter heading's label and title, and the article that defines each 刑法 charge.

Used by tools/knowledge_instruct.py (SFT items) and tools/preference_data.py (preference pairs), so both ask about
the same articles in the same way.
"""

from __future__ import annotations

import re
from collections import defaultdict

from utils.legal.statutes import LAW_TYPES, NUMERAL, PRC, Article, StatuteStore

_HEADING = re.compile(r"^(第[一二三四五六七八九十百零]+[编章节])\s*(.+)$")
GENERIC_HEADINGS = {"一般规定", "其他规定", "基本规定", "通则", "总则", "附则"}
FIRST_SPECIAL_PART_ARTICLE = 102  # 刑法 分则 starts here; 总则's bracketed names (故意犯罪) are not charges


def eligible(store: StatuteStore, doc_types: tuple[str, ...] | None = LAW_TYPES) -> list[Article]:
    """Articles worth teaching: of ``doc_types`` (None: every type; default laws.db's laws), in force, citable as
    第N条, not deleted, not the boilerplate every law repeats, not an amendment (its articles are editing instructions,
    "第X条修改为…", and 宪法修正案 names are ambiguous)."""
    return [a for a in store.current_articles(doc_types) if a.number is not None and not a.is_boilerplate and len(a.text) >= 10
            and a.doc_type not in ("修正案", "修改决定") and "修正案" not in a.law_name]


def heading(text: str) -> tuple[str, str]:
    """(label, title) of a 编/章/节 heading: 「第三章 合同的变更」 → ("第三章", "合同的变更"); no label → ("", text)."""
    m = _HEADING.match(text)
    return (m.group(1), m.group(2).strip()) if m else ("", text.strip())


def charge_articles(articles: list[Article]) -> dict[str, list[Article]]:
    """刑法 分则 articles by the charges they name (an article naming two charges is under both)."""
    by_charge = defaultdict(list)
    for a in articles:
        if a.law_name == PRC + "刑法" and a.number >= FIRST_SPECIAL_PART_ARTICLE:
            for charge in a.charges:
                by_charge[charge].append(a)
    return by_charge


def defining_article(charge: str, candidates: list[Article]) -> Article:
    """The article that defines a charge: not one that only refers back (依照本法第N条的规定定罪), then the one
    naming fewest charges, then the lowest number (the charge table also lists referring articles)."""
    refers = re.compile(rf"依照本法第{NUMERAL}条(?:之{NUMERAL})?的规定定罪")
    return min(candidates, key=lambda a: (bool(refers.search(a.text)), len(a.charges), a.number, a.suffix))
