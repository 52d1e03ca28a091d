"""The metrics LawBench scores with, computed as its evaluation computes them, plus character-level text helpers.

Pure functions, one item at a time (utils/lawbench/scoring.py decides per task what is compared and averages):

- ``rouge_l_jieba``: LawBench's ROUGE-L F — ``rouge-chinese`` 1.0.3 over ``jieba`` 0.42.1 words, an empty
  prediction replaced by 无内容 (1-1, 2-7, 3-2, 3-8).
- ``cjrc_f1``: the CAIL-2021 reading-comprehension F1 LawBench uses: a bag of characters, lower-cased, only
  letters and digits kept (2-5, and per entity / trigger word in 2-6 and 2-10).
- ``set_f1``: F1 of two label sets as LawBench defines it: 0 when either set is empty.
- ``log_distance_score``: 1 − |ln(p+1) − ln(g+1)| / ln 216 for prison terms in months, not clipped (a
  prediction far enough off scores below 0, and LawBench averages it so).

The character-level helpers at the end (``content_chars``, ``lcs_length``, ``rouge_l``) are not LawBench's
definitions: the contamination check, clean_data and self_instruct's deduplication use them.
"""

from __future__ import annotations

import functools
import math
import unicodedata
from collections import Counter

# LawBench's normaliser for prison terms: ln(215 + 1); a distance of ln 216 (or an abstention) scores 0.
LOG_216 = math.log(216)
EMPTY_PREDICTION = "无内容"  # what LawBench's ROUGE compares an empty prediction as


# ---------------------------------------------------------------- LawBench's metrics


@functools.lru_cache(maxsize=1)
def _segmenter():
    """A jieba tokenizer of our own with the default dictionary: words added to jieba's global tokenizer
    elsewhere in the process (retrieval, vocabulary tools) cannot change the metric."""
    import jieba

    jieba.setLogLevel(60)  # its "Building prefix dict…" banner
    tokenizer = jieba.Tokenizer()
    tokenizer.initialize()
    return tokenizer


@functools.lru_cache(maxsize=1)
def _rouge():
    from rouge_chinese import Rouge

    return Rouge(metrics=["rouge-l"])


def rouge_words(text: str) -> list[str]:
    """The words rouge-chinese compares: its sentence cut, whitespace runs collapsed, split on spaces."""
    sentences = [" ".join(s.split()) for s in _rouge().cut_sent(text) if len(s) > 0]
    return [w for s in sentences for w in s.split(" ")]


def rouge_l_jieba(prediction: str, reference: str) -> float:
    """LawBench's ROUGE-L F (rouge-chinese ``Rouge().get_scores(...)[0]["rouge-l"]["f"]`` on jieba-cut text).

    rouge-chinese's own longest-common-subsequence table is a Python dict (~50 s for one model's 3-8);
    ``lcs_length`` computes the same length bit-parallel, and the F is formed exactly as rouge-chinese forms it.
    """
    if not reference.strip():
        raise ValueError("ROUGE-L needs a non-empty reference")
    hyp = " ".join(_segmenter().cut(prediction))
    if hyp.strip() == "":
        hyp = EMPTY_PREDICTION
    hyp_words, ref_words = rouge_words(hyp), rouge_words(" ".join(_segmenter().cut(reference)))
    lcs = lcs_length(ref_words, hyp_words)
    r_lcs, p_lcs = lcs / len(ref_words), lcs / len(hyp_words)
    return 2.0 * ((p_lcs * r_lcs) / (p_lcs + r_lcs + 1e-8))


def _cjrc_chars(text: str) -> list[str]:
    return [ch for ch in text.lower() if ch.isdigit() or ch.isalpha()] if text else []


def cjrc_f1(gold: str, prediction: str) -> float:
    """CAIL-2021 (CJRC) F1 over characters; both empty after normalisation = 1, one empty = 0."""
    gold_chars, pred_chars = _cjrc_chars(gold), _cjrc_chars(prediction)
    if not gold_chars or not pred_chars:
        return float(gold_chars == pred_chars)
    same = sum((Counter(gold_chars) & Counter(pred_chars)).values())
    if same == 0:
        return 0.0
    precision, recall = 1.0 * same / len(pred_chars), 1.0 * same / len(gold_chars)
    return (2 * precision * recall) / (precision + recall)


def set_f1(predicted: set | frozenset, gold: set | frozenset) -> float:
    """F1 of two label sets; an empty set on either side scores 0."""
    hits = len(set(predicted) & set(gold))
    precision = hits / len(predicted) if predicted else 0
    recall = hits / len(gold) if gold else 0
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def log_distance_score(predicted_months: int | None, gold_months: int) -> float:
    """Prison-term score: 1 − |ln(p+1) − ln(g+1)| / ln 216, not clipped; no prediction (None) scores 0."""
    if predicted_months is None:
        return 0.0
    return 1.0 - abs(math.log(gold_months + 1) - math.log(predicted_months + 1)) / LOG_216


# ---------------------------------------------------------------- character-level helpers (not LawBench's)

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
    """ROUGE-L F1 over characters, whitespace dropped (near-duplicate detection; not LawBench's ROUGE-L)."""
    pred = [ch for ch in prediction if not ch.isspace()]
    ref = [ch for ch in reference if not ch.isspace()]
    if not pred or not ref:
        return float(pred == ref)
    lcs = lcs_length(pred, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)
