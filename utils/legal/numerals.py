"""Chinese numerals in legal text: 第二百六十四条, 三年六个月, 二〇一六年 — the one converter for every module."""

from __future__ import annotations

import unicodedata

CN_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
CN_UNITS = {"十": 10, "百": 100, "千": 1000, "万": 10000}


def cn_to_int(text: str) -> int:
    """``'二百六十四'`` → 264, ``'十二'`` → 12, ``'一千零五'`` → 1005, ``'264'`` → 264; ValueError otherwise."""
    text = unicodedata.normalize("NFKC", text.strip())
    if not text:
        raise ValueError("empty number")
    if text.isdigit():
        return int(text)
    if all(ch in CN_DIGITS for ch in text) and len(text) > 1:  # digit by digit: 二〇一六
        return int("".join(str(CN_DIGITS[ch]) for ch in text))
    total, section, digit = 0, 0, None
    for ch in text:
        if ch in CN_DIGITS:
            digit = CN_DIGITS[ch]
        elif ch in CN_UNITS:
            unit = CN_UNITS[ch]
            if unit == 10000:
                total += (section + (digit or 0)) * unit
                section = 0
            else:
                section += (1 if digit is None else digit) * unit  # 十二 = 12: a bare 十 means 1×10
            digit = None
        else:
            raise ValueError(f"not a number: {text!r}")
    return total + section + (digit or 0)


def int_to_cn(n: int) -> str:
    """264 → 二百六十四, 1005 → 一千零五, 17 → 十七 (the way statutes number their articles)."""
    if not 0 < n < 10000:
        raise ValueError(f"article number out of range: {n}")
    digits = "零一二三四五六七八九"
    if n < 20:
        return ("十" if n >= 10 else "") + (digits[n % 10] if n % 10 or n < 10 else "")
    out, zero = "", False
    for unit, name in ((1000, "千"), (100, "百"), (10, "十"), (1, "")):
        d = n // unit % 10
        if d:
            out += ("零" if zero else "") + digits[d] + name
            zero = False
        elif out:
            zero = True
    return out
