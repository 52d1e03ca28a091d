"""LawBench's scoring, task by task: what is read from a prediction, what counts as an abstention, the metric
and the average — as LawBench's own ``evaluation/`` (open-compass/LawBench, commit e30981b) defines them, so
that our numbers can stand next to its published ones. Written from those definitions, quirks included (each
is named where it is implemented):

- Labels and option letters are found by plain substring search over the whole prediction. A choice task
  (1-2, 2-2, 2-4, 2-8, 3-6) scores 1 only if the gold option is the *only* option mentioned anywhere — a later
  "A项错误" makes an answer B wrong; mentioning none is an abstention.
- Label-set tasks (2-3, 2-9, 3-3) take every label mentioned (for 3-3 a charge inside a longer one counts too:
  合同诈骗 also mentions 诈骗); none mentioned = abstention.
- 3-1 reads one article number from each 、-separated piece; 3-4/3-5 read the *first* "N个月", else the first
  "N月", else the first "N年" (×12) after Chinese numerals are converted with ``cn2an`` — so 死刑/无期 or
  later numbers in the text never override an answer given first; 3-7 accepts the gold amount anywhere.
- Left out of the score but still in the abstention denominator: 2-2 items whose gold is 赔偿 (not one of its
  16 labels) and 3-4/3-5 items whose gold is 死刑 or 无期.
- No abstention rule (reported 0): the ROUGE-L tasks, 2-1, 2-5, 2-10, and 2-6 (LawBench counts 2-6 predictions
  without entities but returns them under a misspelt key, so its published abstention is 0).

``score_items(task, prompts, predictions, references)`` returns ``(score, abstention, details)``; each detail is
``{"extracted", "abstained", "score"}`` with ``score`` None (and a ``skipped`` reason) for items left out.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable

from utils.common.errors import LawgptError
from utils.lawbench import labels
from utils.lawbench import metrics as M


class LawBenchError(LawgptError, ValueError):
    """Unknown task, missing prepared data, a gold answer not in LawBench's form, or mismatched inputs."""


# cn2an's "smart" pattern backtracks for seconds over a long run of ASCII digits (degenerate outputs such as
# 案号:2019000000…). ASCII digits only take part in a cn2an match as <digits><units>年; where the text has none,
# they are inert, so they are set aside as private-use characters during the call and put back: same result.
_SMART_YEAR = re.compile("[0-9][十拾百佰千仟万亿]+年")
_SET_ASIDE = str.maketrans("0123456789", "".join(chr(0xE000 + d) for d in range(10)))
_PUT_BACK = {0xE000 + d: str(d) for d in range(10)}


def _cn2an(text: str) -> str:
    """Chinese numerals to Arabic inside free text (二年 → 2年), with cn2an as LawBench does. cn2an 0.5.22 is
    pinned: 0.5.24 reads some numerals differently and moves one published 3-1 score by 0.003. It warns
    about every numeral it cannot read (and keeps it as it was); those warnings are noise here."""
    import cn2an

    staged = text.replace("廿", "二十").replace("半", "0.5").replace("两", "2")  # cn2an's first step
    aside = not _SMART_YEAR.search(staged) and not any("\ue000" <= ch <= "\ue009" for ch in text)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if not aside:
            return cn2an.transform(text, "cn2an")
        return cn2an.transform(text.translate(_SET_ASIDE), "cn2an").translate(_PUT_BACK)


def _judged(extracted, abstained: bool, score: float | None, skipped: str | None = None) -> dict:
    out = {"extracted": extracted, "abstained": abstained, "score": score}
    if skipped:
        out["skipped"] = skipped
    return out


def _body(reference: str, prefix: str, suffix: str = "") -> str:
    """The gold answer between LawBench's fixed prefix and suffix (LawBench asserts this form)."""
    if not reference.startswith(prefix) or not reference.endswith(suffix) or len(reference) <= len(prefix + suffix):
        raise LawBenchError(f"gold answer {reference!r} is not of LawBench's form {prefix}…{suffix}")
    return reference[len(prefix):len(reference) - len(suffix)]


def mentioned(text: str, options: tuple[str, ...]) -> list[str]:
    """The options that occur anywhere in ``text`` (substrings, in option order)."""
    return [option for option in options if option in text]


# ---------------------------------------------------------------- choice and label-set tasks


def _choice(prediction: str, gold: str, options: tuple[str, ...]) -> dict:
    if gold not in options:
        raise LawBenchError(f"gold option {gold!r} is not one of {', '.join(options)}")
    found = mentioned(prediction, options)
    return _judged(found, not found, float(found == [gold]))


def _label_set(prediction: str, gold: list[str], options: tuple[str, ...]) -> dict:
    found = mentioned(prediction, options)
    return _judged(found, not found, M.set_f1(set(found), set(gold)))


def _letter(prefix: str, options: str) -> Callable[[str, str], dict]:
    def judge(prediction: str, reference: str) -> dict:
        return _choice(prediction, _body(reference, prefix)[:1], tuple(options))

    return judge


def judge_dispute_focus(prediction: str, reference: str) -> dict:
    gold = _body(reference, "争议焦点类别：")[:-1]  # LawBench drops the last character (the 。)
    if gold == "赔偿":  # LawBench: "dataset imperfection" — not one of the 16 labels, left out of the score
        return _judged(None, False, None, skipped="gold 赔偿 is not one of the 16 labels")
    return _choice(prediction, gold, labels.DISPUTE_FOCUS)


def judge_marital(prediction: str, reference: str) -> dict:
    gold = _body(reference, "类别:", "。").split("、")
    unknown = [g for g in gold if g not in labels.MARITAL]
    if unknown:
        raise LawBenchError(f"gold labels {unknown} are not 2-3 labels")
    return _label_set(prediction, gold, labels.MARITAL)


def judge_charges(prediction: str, reference: str) -> dict:
    return _label_set(prediction, _body(reference, "罪名:").split(";"), labels.CHARGES)


def judge_events(prediction: str, reference: str) -> dict:
    return _label_set(prediction, reference.split(";"), labels.EVENTS)


# ---------------------------------------------------------------- numbers: articles, prison terms, amounts


def articles_in(prediction: str) -> list[int]:
    """3-1: from each 、-separated piece the first number once 第…款 is dropped and 第N条 → N (cn2an)."""
    found = []
    for piece in prediction.split("、"):
        piece = piece.replace("万元", "元")
        piece = re.sub(r"第(.*?)款", "", piece)
        piece = re.sub(r"第(.*?)条", r"\1", piece)
        numbers = re.findall(r"\d+", _cn2an(piece))
        if numbers:
            found.append(int(numbers[0]))
    return found


def judge_articles(prediction: str, reference: str) -> dict:
    gold = _body(reference, "法条:刑法第", "条").replace("条", "").split("、")
    if not all(g.isdigit() and int(g) <= 490 for g in gold):
        raise LawBenchError(f"gold answer {reference!r}: article numbers must be digits up to 490")
    found = articles_in(prediction)
    return _judged(sorted(set(found)), not found, M.set_f1(set(found), {int(g) for g in gold}))


def months_in(prediction: str) -> int | None:
    """3-4/3-5: the first N个月, else the first N月, else the first N年 × 12 (numerals converted by cn2an)."""
    text = _cn2an(prediction)
    months = re.findall(r"(\d+)个月", text) + re.findall(r"(\d+)月", text)
    if months:
        return int(months[0])
    years = re.findall(r"(\d+)年", text)
    return int(years[0]) * 12 if years else None


def judge_prison_term(prediction: str, reference: str) -> dict:
    if "死刑" in reference or "无期" in reference:  # LawBench: "data imperfection" — only terms in months are scored
        return _judged(None, False, None, skipped="gold is 死刑/无期: LawBench scores terms in months only")
    body = _body(reference, "刑期:", "个月")
    if not body.isdigit():
        raise LawBenchError(f"gold answer {reference!r}: expected 刑期:N个月")
    months = months_in(prediction)
    return _judged(months, months is None, M.log_distance_score(months, int(body)))


AMOUNT_PREFIX = "上文涉及到的犯罪金额:"


def amounts_in(prediction: str) -> list[float]:
    """3-7: every number in the text (8,500 reads as 8 and 500, as in LawBench)."""
    return [float(x) for x in re.findall(r"\d+\.?\d*", prediction)]


def judge_amount(prediction: str, reference: str) -> dict:
    body = _body(reference, AMOUNT_PREFIX, "元。")
    try:
        if "千元" in body or "万" in body:
            raise ValueError
        gold = float(body)
    except ValueError as e:
        raise LawBenchError(f"gold answer {reference!r}: expected {AMOUNT_PREFIX}<number>元。") from e
    found = amounts_in(prediction)
    return _judged(found, not found, float(gold in found))


# ---------------------------------------------------------------- extraction tasks (2-5, 2-6, 2-10)


def entities_in(prediction: str) -> dict[str, str]:
    """2-6: for each entity type, the value after its *last* ``type:`` (up to a space or line end);
    无 and 未提及 are not values, and a type within the last 3 characters is ignored."""
    found = {}
    for etype in labels.ENTITY_TYPES:
        for m in re.finditer(re.escape(etype), prediction):
            if m.end() >= len(prediction) - 2 or prediction[m.end()] not in ":：":
                continue
            value = re.split("\n| ", prediction[m.end() + 1:].strip())[0].strip()
            if value not in ("无", "未提及"):
                found[etype] = value
    return found


def gold_entities(reference: str) -> dict[str, str]:
    """``type:value;type:value`` (a value may list several names with 、: they are compared as one string)."""
    out = {}
    if reference.strip() == "":
        return out
    for segment in reference.split(";"):
        parts = segment.split(":")
        if len(parts) < 2:
            raise LawBenchError(f"gold answer {reference!r}: expected type:value;type:value")
        out[parts[0]] = parts[1]
    return out


def _soft_f1(matched: list[float], n_predicted: int, n_gold: int) -> float:
    precision = sum(matched) / n_predicted if n_predicted > 0 else 0
    recall = sum(matched) / n_gold if n_gold > 0 else 0
    return 2 * precision * recall / (precision + recall + 1e-10)


def judge_entities(prediction: str, reference: str) -> dict:
    gold, found = gold_entities(reference), entities_in(prediction)
    if not gold:  # nothing to find: right only if nothing was found
        return _judged(found, False, float(not found))
    matched = [M.cjrc_f1(gold[etype], value) for etype, value in found.items() if etype in gold]
    return _judged(found, False, _soft_f1(matched, len(found), len(gold)))


def judge_triggers(prediction: str, reference: str) -> dict:
    """2-10: the ;-separated words compared position by position (the i-th predicted with the i-th gold)."""
    gold, predicted = reference.split(";"), prediction.split(";")
    matched = [M.cjrc_f1(g, p) for g, p in zip(gold, predicted)]
    return _judged(predicted, False, _soft_f1(matched, len(predicted), len(gold)))


def judge_reading(prediction: str, reference: str) -> dict:
    return _judged(prediction, False, M.cjrc_f1(reference.replace("回答:", ""), prediction))


def _rouge(strip: str = "") -> Callable[[str, str], dict]:
    def judge(prediction: str, reference: str) -> dict:
        compared = prediction if prediction.strip() else M.EMPTY_PREDICTION
        return _judged(compared, False, M.rouge_l_jieba(prediction, reference.replace(strip, "") if strip else reference))

    return judge


# ---------------------------------------------------------------- the table and the aggregate

JUDGES: dict[str, Callable[[str, str], dict]] = {
    "1-1": _rouge(strip="答案:"),
    "1-2": _letter("正确答案：", "ABCD"),
    "2-2": judge_dispute_focus,
    "2-3": judge_marital,
    "2-4": lambda prediction, reference: _choice(prediction, reference, labels.TOPICS),
    "2-5": judge_reading,
    "2-6": judge_entities,
    "2-7": _rouge(),
    "2-8": _letter("[正确答案]", "ABCDE"),
    "2-9": judge_events,
    "2-10": judge_triggers,
    "3-1": judge_articles,
    "3-2": _rouge(),
    "3-3": judge_charges,
    "3-4": judge_prison_term,
    "3-5": judge_prison_term,
    "3-6": _letter("正确答案:", "ABCD"),
    "3-7": judge_amount,
    "3-8": _rouge(),
}
PROOFREADING = "2-1"  # corpus-level F0.5: scored as a whole by utils/lawbench/proofreading.py


def _score_proofreading(prompts: list[str], predictions: list[str], references: list[str]) -> tuple[float, list[dict]]:
    # ChERRANT's character-level alignment and LawBench's clean-up of 2-1 answers live in their own module.
    try:
        from utils.lawbench import proofreading as P
    except ModuleNotFoundError as e:
        raise LawBenchError("task 2-1 is scored by utils/lawbench/proofreading.py, which this checkout lacks") from e
    try:
        score, counts = P.score_proofreading([P.source_from_prompt(p) for p in prompts], predictions, references)
    except ValueError as e:
        raise LawBenchError(f"task 2-1: {e}") from e
    # per item: the cleaned answer LawBench compares and that item's own F0.5 (the task's score is corpus-level)
    details = [_judged(c["prediction"], False, P.f_beta(c["tp"], c["fp"], c["fn"])) | {k: c[k] for k in ("tp", "fp", "fn")}
               for c in counts]
    return score, details


def judge(task: str, prediction: str, reference: str) -> dict:
    """One item of any task but 2-1: ``{"extracted", "abstained", "score"}`` (score None = left out)."""
    if task not in JUDGES:
        raise LawBenchError(f"no LawBench item rule for task {task!r}" + (" (2-1 is scored as a whole)" if task == PROOFREADING else ""))
    return JUDGES[task](prediction, reference)


def score_items(task: str, prompts: list[str], predictions: list[str], references: list[str]) -> tuple[float, float, list[dict]]:
    """``(score, abstention, details)`` of one task: the mean over the items that count, abstentions over all."""
    if not (len(prompts) == len(predictions) == len(references)):
        raise LawBenchError(f"task {task}: {len(prompts)} prompts, {len(predictions)} predictions, {len(references)} gold answers")
    if not predictions:
        raise LawBenchError(f"task {task}: nothing to score")
    if task == PROOFREADING:
        score, details = _score_proofreading(prompts, predictions, references)
        return score, 0.0, details
    details = []
    for i, (prediction, reference) in enumerate(zip(predictions, references)):
        try:
            details.append(judge(task, prediction, reference))
        except LawBenchError as e:
            raise LawBenchError(f"task {task} item {i}: {e}") from e
    counted = [d["score"] for d in details if d["score"] is not None]
    score = sum(counted) / len(counted) if counted else 0.0
    return score, sum(d["abstained"] for d in details) / len(details), details

