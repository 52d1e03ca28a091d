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


def is_canonical(text: str) -> bool:
    """Whether a numeral is written as statutes write it: Arabic digits, or the Chinese form :func:`int_to_cn` gives
    (两 for 二, 〇 for 零 and a leading 一十 accepted). 「六百八」 (六百八十? 六百零八?), 「二百六三」 and 「九六」 are not:
    read leniently they give another number (608, 203, 96), so a citation written so is malformed (issue 31)."""
    text = unicodedata.normalize("NFKC", text.strip())
    if text.isdigit():
        return True
    try:
        value = cn_to_int(text)
        written = int_to_cn(value)
    except ValueError:
        return False
    plain = text.replace("两", "二").replace("〇", "零")
    return plain in (written, "一" + written if written.startswith("十") else written)


def readings(text: str) -> list[int]:
    """What a malformed numeral may have meant: a 十 lost before its last digit (二百六三 → 263), or a trailing digit
    read as tens (六百八 → 680); the lenient reading (608, 203) is not among them unless written so."""
    out = []
    for candidate in (text[:-1] + "十" + text[-1], text + "十"):
        if is_canonical(candidate):
            out.append(cn_to_int(candidate))
    return out
