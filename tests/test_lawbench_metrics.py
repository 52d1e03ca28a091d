"""LawBench metrics and extraction: hand-computed cases, edge cases, and the gold-answer sanity check."""

import json
import math
import random
from pathlib import Path

import pytest

from utils import lawbench as L
from utils import lawbench_metrics as M

LAWBENCH = Path(__file__).resolve().parent.parent.parent / "shared" / "lawbench"
needs_lawbench = pytest.mark.skipif(not (LAWBENCH / "data").is_dir(), reason=f"LawBench copy not found at {LAWBENCH}")


# ---------------------------------------------------------------- numbers


@pytest.mark.parametrize("text, value", [
    ("264", 264), ("二百六十四", 264), ("十二", 12), ("十", 10), ("一千零五", 1005), ("两", 2), ("三十", 30),
    ("一百", 100), ("二〇一六", 2016), ("１２", 12), ("一万二千", 12000),
])
def test_cn_to_int(text, value):
    assert M.cn_to_int(text) == value


def test_cn_to_int_rejects_non_numbers():
    with pytest.raises(ValueError):
        M.cn_to_int("盗窃")


@pytest.mark.parametrize("text, months", [
    ("[刑期]12月<eoa>", 12), ("刑期:4个月", 4), ("1年6个月", 18), ("一年零六个月", 18), ("十八个月", 18),
    ("两年", 24), ("有期徒刑三年", 36), ("1年半个月", 18), ("判处死刑", "death"), ("刑期:无期", "life"),
    ("2016年3月28日被告人盗窃，判处六个月", 6),  # calendar dates are not sentences
    ("无法判断", None), ("", None),
])
def test_parse_months(text, months):
    assert M.parse_months(text) == months


@pytest.mark.parametrize("text, articles", [
    ("刑法第264条", {264}), ("第二百六十四条", {264}), ("刑法第234、275条", {234, 275}),
    ("[法条]刑法第128条、刑法第341条<eoa>", {128, 341}), ("《刑法》第二百三十四条和第275条", {234, 275}),
    ("没有法条", set()),
])
def test_parse_articles_arabic_and_chinese(text, articles):
    assert M.parse_articles(text) == articles


def test_parse_amounts():
    assert M.parse_amounts("共计8,500.00元，其中0.5万元") == [8500.0, 5000.0]
    assert M.parse_amounts("犯罪金额八千五百元") == [8500.0]
    assert M.parse_amounts("无") == []


# ---------------------------------------------------------------- metrics, hand-computed


def _lcs_dp(a, b):
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            table[i + 1][j + 1] = table[i][j] + 1 if x == y else max(table[i][j + 1], table[i + 1][j])
    return table[-1][-1]


def test_bit_parallel_lcs_matches_dynamic_programming():
    rng = random.Random(0)
    for _ in range(200):
        a = "".join(rng.choice("甲乙丙丁戊") for _ in range(rng.randint(0, 30)))
        b = "".join(rng.choice("甲乙丙丁戊") for _ in range(rng.randint(0, 30)))
        assert M.lcs_length(a, b) == _lcs_dp(a, b)


def test_rouge_l():
    # LCS(ABCD, ACDE) = ACD = 3: P = 3/4, R = 3/4, F = 0.75
    assert M.rouge_l("甲乙丙丁", "甲丙丁戊") == pytest.approx(0.75)
    assert M.rouge_l("甲 乙", "甲乙") == 1.0  # whitespace ignored
    assert M.rouge_l("", "甲乙") == 0.0
    assert M.rouge_l("戊己", "甲乙") == 0.0


def test_set_f1_duplicates_and_empty():
    assert M.set_f1({"盗窃", "诈骗"}, {"盗窃"}) == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert M.set_f1(set(["盗窃", "盗窃"]), {"盗窃"}) == 1.0
    assert M.set_f1(set(), {"盗窃"}) == 0.0
    assert M.set_f1(set(), set()) == 1.0


def test_char_f1_ignores_punctuation():
    # pred 21万元 (4 chars) vs gold 21万元借款 (6): overlap 4, P 1, R 2/3 → F 0.8
    assert M.char_f1("21万元。", "21万元借款") == pytest.approx(0.8)
    assert M.char_f1("", "甲") == 0.0


def test_soft_f1_partial_spans_and_types():
    gold = {("受害人", "严某某"), ("组织机构", "公安机关")}
    assert M.soft_f1(gold, gold) == 1.0
    # 严某 vs 严某某: char F1 = 2·1·(2/3)/(5/3) = 0.8; the wrong-type item earns nothing
    pred = {("受害人", "严某"), ("地点", "公安机关")}
    precision = recall = (0.8 + 0) / 2
    assert M.soft_f1(pred, gold) == pytest.approx(2 * precision * recall / (precision + recall))
    assert M.soft_f1(set(), gold) == 0.0
    assert M.soft_f1(set(), set()) == 1.0


def test_log_distance_score():
    assert M.log_distance_score(12, 12) == 1.0
    expected = 1 - abs(math.log(7) - math.log(13)) / math.log(M.MAX_MONTHS + 1)
    assert M.log_distance_score(6, 12) == pytest.approx(expected)
    assert M.log_distance_score(0, 100000) == 0.0  # clipped
    assert M.log_distance_score("life", "life") == 1.0
    assert M.log_distance_score(240, "life") == 0.0


def test_proofreading_f05():
    source, gold = "上诉证据收集程序合法", "上述证据收集程序合法"
    assert M.edit_counts(source, gold, gold) == (1, 0, 0)
    assert M.edit_counts(source, source, gold) == (0, 0, 1)  # no correction made
    assert M.edit_counts(source, None, gold) == (0, 0, 1)  # abstained
    assert M.edit_counts(source, "上述证据收集程序合法。", gold) == (1, 1, 0)
    # P = 1/2, R = 1: F0.5 = 1.25·0.5·1 / (0.25·0.5 + 1) = 0.5556
    assert M.f_beta(1, 1, 0) == pytest.approx(1.25 * 0.5 / 1.125)
    assert M.f_beta(0, 0, 0) == 1.0


# ---------------------------------------------------------------- extraction and abstention


@pytest.mark.parametrize("task, text, expected", [
    ("1-2", "[正确答案]B<eoa>", "B"), ("1-2", "正确答案：D。", "D"), ("1-2", "我认为选C", "C"),
    ("1-2", "A和B都对", None), ("1-2", "不知道", None), ("2-8", "[正确答案]E<eoa>", "E"),
    ("2-4", "[类别]婚姻家庭<eoa>", "婚姻家庭"), ("2-4", "这属于劳动纠纷或者合同纠纷", None), ("2-4", "", None),
    ("3-4", "[刑期]十二个月<eoa>", 12), ("3-4", "我无法回答", None),
    ("2-1", "\n上述证据合法\n解释……", "上述证据合法"), ("1-1", "   ", None),
])
def test_extraction(task, text, expected):
    assert L.TASKS[task].extract(text) == expected


def test_charges_markers_separators_and_names_with_commas():
    assert L.charges("[罪名]盗窃;诈骗<eoa>") == {"盗窃", "诈骗"}
    assert L.charges("罪名:盗窃罪、诈骗罪") == {"盗窃", "诈骗"}  # 、 between two charges
    assert L.charges("罪名:走私、贩卖、运输、制造毒品") == {"走私、贩卖、运输、制造毒品"}  # one charge name
    assert L.charges("[罪名]盗窃;盗窃<eoa>") == {"盗窃"}  # duplicates collapse
    assert L.charges("被告人的行为构成故意伤害罪。") == {"故意伤害"}  # no marker: known names + 罪
    assert L.charges("无法判断") is None


def test_labels_longest_match_and_abstention():
    assert L.labels_in("类别:按月给付抚养费、婚后有子女", L.MARITAL) == {"按月给付抚养费", "婚后有子女"}
    assert L.labels_in("不清楚", L.MARITAL) is None


def test_entities_and_triggers():
    gold = "受害人:严某某、肖某某;被盗物品:查获手机"
    assert L.entities(gold) == {("受害人", "严某某"), ("受害人", "肖某某"), ("被盗物品", "查获手机")}
    assert L.entities("") == frozenset()  # the gold has items without entities
    assert L.entities("这句话没有实体类型") is None
    assert L.triggers("查扣;退给") == {("", "查扣"), ("", "退给")}


def _item(task, answer, question="q"):
    return {"task": task, "index": 0, "instruction": "", "question": question, "answer": answer}


def test_score_task_counts_abstentions_as_zero():
    items = [_item("1-2", "正确答案：B。"), _item("1-2", "正确答案：C。"), _item("1-2", "正确答案：A。")]
    score, details = L.score_task("1-2", items, ["[正确答案]B<eoa>", "说不清", "[正确答案]D<eoa>"])
    assert score.score == pytest.approx(1 / 3)
    assert score.abstention == pytest.approx(1 / 3)
    assert [d["abstained"] for d in details] == [False, True, False]


def test_amount_answer_in_text():
    items = [_item("3-7", "上文涉及到的犯罪金额:8500.0元。")]
    assert L.score_task("3-7", items, ["1500元加7000元，共计8500元"])[0].score == 1.0
    assert L.score_task("3-7", items, ["共计9000元"])[0].score == 0.0
    assert L.score_task("3-7", items, ["不清楚"])[0].abstention == 1.0


def test_resolve_tasks():
    assert L.resolve_tasks("all") == list(L.TASKS)
    assert L.resolve_tasks("3-3,1-1") == ["1-1", "3-3"]
    with pytest.raises(L.LawBenchError, match="unknown LawBench task"):
        L.resolve_tasks("9-9")


# ---------------------------------------------------------------- the whole benchmark


def _lawbench_items(task):
    data = json.loads((LAWBENCH / "data" / "zero_shot" / f"{task}.json").read_text(encoding="utf-8"))
    return [_item(task, x["answer"], x["question"]) | {"index": i} for i, x in enumerate(data)]


@needs_lawbench
@pytest.mark.parametrize("task", list(L.TASKS))
def test_gold_answers_score_the_maximum_and_never_abstain(task):
    items = _lawbench_items(task)
    score, _ = L.score_task(task, items, [x["answer"] for x in items])
    assert (score.score, score.abstention, score.n) == (1.0, 0.0, 500)
    # and the metric discriminates: every item given its neighbour's gold answer scores lower
    shifted = [x["answer"] for x in items[1:] + items[:1]]
    assert L.score_task(task, items, shifted)[0].score < 1.0


@needs_lawbench
def test_gold_extraction_finds_every_label():
    for item in _lawbench_items("3-1"):  # every article number in the answer is extracted
        assert len(L.articles(item["answer"])) == item["answer"].count("、") + 1
    for item in _lawbench_items("3-3"):
        assert len(L.charges(item["answer"])) == item["answer"].count(";") + 1
    for item in _lawbench_items("3-4"):
        assert L.months(item["answer"]) is not None
