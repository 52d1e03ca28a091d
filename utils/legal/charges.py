"""The 刑法 charge table: legal-documents-cn's criminal_law.csv (MIT, read from the installed package) → charge names
per article (the statute store gives them to 刑法's articles)."""

from __future__ import annotations

import csv
import re
from pathlib import Path

from utils.common.errors import LawgptError
from utils.legal.numerals import cn_to_int

_CN_NUM = "零〇一二两三四五六七八九十百千"
NUMERAL = rf"[{_CN_NUM}]+|\d+"


class ChargeTableError(LawgptError, ValueError):
    """The charge table cannot be read."""


def _split_charges(bracketed: str) -> list[str]:
    """【盗窃罪、诈骗罪;持有伪造的发票罪】 → three charges; headings that are not charges are dropped."""
    inner = bracketed.strip().strip("【】")
    parts = re.split(r"[;；]|(?<=罪)、", inner)
    return [p.strip() for p in parts if p.strip().endswith("罪") and "罪名" not in p and "处罚" not in p]


def load_charges(path: str | Path) -> dict[tuple[int, int], tuple[str, ...]]:
    """(article number, 之N suffix) → charge names, from legal-documents-cn's criminal_law.csv.

    The CSV has two quirks: some rows carry the next articles' text (``…\\n第三百零一条　【聚众淫乱罪】…``),
    and a main article's bracket also lists the charges of its unnamed 之N articles (133's 【交通肇事罪;
    危险驾驶罪】 while 133之一 has none). Embedded headers are split out; the last charges of such a main
    article move to its unnamed 之N articles in order (checked by hand on 133, 162, 234, 262, 388, 399).
    """
    charges: dict[tuple[int, int], list[str]] = {}
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            rows = [row for row in csv.DictReader(f) if row.get("article_code")]
    except (OSError, csv.Error) as e:
        raise ChargeTableError(f"{path}: cannot read the 刑法 charge table: {e}") from e
    embedded = re.compile(rf"\n(?:第({NUMERAL})条)(?:之({NUMERAL}))?[\s\u3000]*(【[^】\n]*】)")
    for i, row in enumerate(rows, start=2):
        try:
            key = (int(row["article_code"]), int(row["article_sub_code"] or 0))
        except ValueError as e:
            raise ChargeTableError(f"{path}: row {i}: bad article_code/article_sub_code: {e}") from e
        charges.setdefault(key, []).extend(_split_charges(row["article_name"] or ""))
        for m in embedded.finditer(row["article_content"] or ""):
            sub = (cn_to_int(m.group(1)), cn_to_int(m.group(2)) if m.group(2) else 0)
            charges.setdefault(sub, []).extend(_split_charges(m.group(3)))
    for (number, suffix), names in list(charges.items()):
        if suffix:
            continue
        unnamed = sorted(s for (n, s), v in charges.items() if n == number and s and not v)
        if unnamed and len(names) > len(unnamed):
            moved = names[len(names) - len(unnamed):]
            del names[len(names) - len(unnamed):]
            for s, name in zip(unnamed, moved):
                charges[(number, s)] = [name]
    return {k: tuple(dict.fromkeys(v)) for k, v in charges.items() if v}
