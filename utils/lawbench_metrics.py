"""LawBench metrics and the small parsers they need, written from the paper's definitions.

Everything here is pure and per item (the task registry in utils/lawbench.py decides which parser
and which metric a task uses and averages over items):

- ``rouge_l``: ROUGE-L F1 over characters (whitespace dropped). LawBench scored word-level ROUGE on
  jieba tokens; characters avoid a segmenter's dictionary and give the same ordering of systems.
- ``set_f1``: F1 between two label sets (duplicates collapse — a set is a set).
- ``char_f1``: bag-of-characters F1 (reading comprehension), punctuation and whitespace ignored.
- ``soft_f1``: like set F1, but a predicted item earns its best character-F1 similarity with a gold
  item of the same type instead of 0/1 (entity and trigger extraction: partial spans earn partial credit).
- ``log_distance_score``: 1 − |ln(p+1) − ln(g+1)| / ln(MAX_MONTHS+1), clipped to [0, 1].
- ``edit_counts`` + ``f_beta``: proofreading as in grammatical error correction — the edits a system
  makes to the source sentence are compared with the gold edits; F0.5 weighs precision twice.
"""

from __future__ import annotations

import difflib
import math
import re
import unicodedata
from collections import Counter

from utils.numerals import cn_to_int  # noqa: F401 - part of this module's API

# Sentences in the data run from 0 to a few hundred months; the cap sets how far off a prediction can
# be before it earns nothing (ln(217) ≈ 5.38: a factor of ~e^5 ≈ 150 between prediction and truth).
MAX_MONTHS = 216

NUMBER = r"[0-9０-９]+|[零〇一二两三四五六七八九十百千万]+"


# ---------------------------------------------------------------- text helpers

_PUNCT_CATEGORIES = ("P", "S", "Z", "C")


def content_chars(text: str) -> list[str]:
    """Characters that carry content: punctuation, symbols, whitespace and control characters dropped."""
    return [ch for ch in unicodedata.normalize("NFKC", text) if not unicodedata.category(ch).startswith(_PUNCT_CATEGORIES)]


def lcs_length(a: str | list, b: str | list) -> int:
    """Length of the longest common subsequence, bit-parallel (one big-int step per element of ``a``)."""
    if not a or not b:
        return 0
    masks: dict = {}
    for i, ch in enumerate(b):
        masks[ch] = masks.get(ch, 0) | (1 << i)
    full = (1 << len(b)) - 1
    v = full
    for ch in a:
        u = v & masks.get(ch, 0)
        v = ((v + u) | (v - u)) & full
    return len(b) - bin(v).count("1")


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 over characters, whitespace dropped (punctuation kept: it is part of the text)."""
    pred = [ch for ch in prediction if not ch.isspace()]
    ref = [ch for ch in reference if not ch.isspace()]
    if not pred or not ref:
        return float(pred == ref)
    lcs = lcs_length(pred, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def char_f1(prediction: str, reference: str) -> float:
    """Bag-of-characters F1 (SQuAD-style for Chinese), punctuation and whitespace ignored."""
    pred, ref = Counter(content_chars(prediction)), Counter(content_chars(reference))
    if not pred or not ref:
        return float(not pred and not ref)
    overlap = sum((pred & ref).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / sum(pred.values()), overlap / sum(ref.values())
    return 2 * precision * recall / (precision + recall)


def set_f1(predicted: set | frozenset, gold: set | frozenset) -> float:
    """F1 of two label sets; both empty counts as a perfect answer."""
    if not predicted and not gold:
        return 1.0
    hits = len(set(predicted) & set(gold))
    if hits == 0:
        return 0.0
    precision, recall = hits / len(predicted), hits / len(gold)
    return 2 * precision * recall / (precision + recall)


def soft_f1(predicted: set, gold: set) -> float:
    """Soft F1 over ``(type, span)`` pairs: each item earns its best span char-F1 with a same-type item."""
    if not predicted and not gold:
        return 1.0
    if not predicted or not gold:
        return 0.0

    def best(item, pool) -> float:
        return max((char_f1(item[1], other[1]) for other in pool if other[0] == item[0]), default=0.0)

    precision = sum(best(p, gold) for p in predicted) / len(predicted)
    recall = sum(best(g, predicted) for g in gold) / len(gold)
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def log_distance_score(predicted: int | str, gold: int | str) -> float:
    """Prison term score in [0, 1]; ``'death'``/``'life'`` sentences only match themselves."""
    if isinstance(predicted, str) or isinstance(gold, str):
        return float(predicted == gold)
    distance = abs(math.log(predicted + 1) - math.log(gold + 1))
    return max(0.0, 1.0 - distance / math.log(MAX_MONTHS + 1))


# ---------------------------------------------------------------- proofreading (F0.5 over edits)


def edits(source: str, target: str) -> set[tuple[int, int, str]]:
    """The character edits turning ``source`` into ``target``: ``(start, end, replacement)`` spans of source."""
    matcher = difflib.SequenceMatcher(None, source, target, autojunk=False)
    return {(i1, i2, target[j1:j2]) for op, i1, i2, j1, j2 in matcher.get_opcodes() if op != "equal"}


def edit_counts(source: str, prediction: str | None, gold: str) -> tuple[int, int, int]:
    """``(true positives, false positives, false negatives)`` of the predicted edits against the gold ones."""
    gold_edits = edits(source, gold)
    if prediction is None:  # abstained: every gold edit is missed
        return 0, 0, len(gold_edits)
    predicted = edits(source, prediction)
    tp = len(predicted & gold_edits)
    return tp, len(predicted) - tp, len(gold_edits) - tp


def f_beta(tp: int, fp: int, fn: int, beta: float = 0.5) -> float:
    """F-beta from summed counts; a system that makes no edits where none were needed scores 1."""
    if tp + fp + fn == 0:
        return 1.0
    if tp == 0:
        return 0.0
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    b2 = beta * beta
    return (1 + b2) * precision * recall / (b2 * precision + recall)


# ---------------------------------------------------------------- number parsing

_DURATION = re.compile(
    rf"(?P<years>{NUMBER})\s*年(?:\s*[零又]?\s*(?P<ym>{NUMBER}|半)\s*个?月)?(?![0-9日号度])"
    rf"|(?P<months>{NUMBER})\s*个?月(?![0-9日号份])"
)


def parse_months(text: str) -> int | str | None:
    """The first prison term in ``text``: months as int, ``'death'``/``'life'``, or None when there is none.

    Understands 4个月, 18月, 1年6个月, 一年零六个月, 十二个月, 两年; skips calendar dates (2016年3月28日).
    """
    if "死刑" in text:
        return "death"
    if "无期" in text:
        return "life"
    for m in _DURATION.finditer(text):
        try:
            if m.group("years"):
                years = cn_to_int(m.group("years"))
                if years >= 100:  # a calendar year, not a sentence
                    continue
                extra = m.group("ym")
                months = 6 if extra == "半" else (cn_to_int(extra) if extra else 0)
                return years * 12 + months
            return cn_to_int(m.group("months"))
        except ValueError:
            continue
    return None


_AMOUNT = re.compile(r"([0-9][0-9,，]*(?:\.[0-9]+)?)\s*(万)?|([零〇一二两三四五六七八九十百千万]+)\s*(?=元)")


def parse_amounts(text: str) -> list[float]:
    """Every amount in ``text``: 8500 / 8,500.00 / 0.85万 / 八千五百(元)."""
    values = []
    for m in _AMOUNT.finditer(unicodedata.normalize("NFKC", text)):
        if m.group(1):
            value = float(m.group(1).replace(",", "").replace("，", ""))
            values.append(value * 10000 if m.group(2) else value)
        else:
            try:
                values.append(float(cn_to_int(m.group(3))))
            except ValueError:
                continue
    return values


_ARTICLE = re.compile(rf"第\s*({NUMBER})\s*条")
_ARTICLE_LIST = re.compile(r"第\s*([0-9]+(?:\s*[、,，和及]\s*(?:第\s*)?[0-9]+)+)\s*条")


def parse_articles(text: str) -> set[int]:
    """Article numbers: 刑法第264条, 第二百六十四条, and lists such as 刑法第234、275条."""
    found = set()
    for m in _ARTICLE_LIST.finditer(text):
        found.update(int(n) for n in re.findall(r"[0-9]+", m.group(1)))
    for m in _ARTICLE.finditer(text):
        try:
            found.add(cn_to_int(m.group(1)))
        except ValueError:
            continue
    return found
