"""utils/lawbench/contamination.py: n-gram overlap of test items with a training file."""

import json

import pytest

from utils.common.datafiles import DataError
from utils.lawbench import contamination as C


def _item(index, question, answer="答案"):
    return {"task": "3-3", "index": index, "instruction": "", "question": question, "answer": answer}


def test_overlap_share_and_flagging(tmp_path):
    copied = "被告人张某于2016年3月28日在本市洪山区盗窃手机一部价值人民币三千元"
    train = tmp_path / "train.jsonl"
    train.write_text(json.dumps({"instruction": "问", "input": copied, "output": "答案"}, ensure_ascii=False) + "\n"
                     + json.dumps({"instruction": "x", "output": "y", "history": [["甲", "乙"]]}) + "\n",
                     encoding="utf-8")
    index = C.build_index([train], n=5)
    items = [_item(0, copied), _item(1, "完全不同的一段案情描述没有任何重合的文字内容在这里"),
             _item(2, "被告人张某于2016年3月28日在本市" + "另外的一大段描述完全不同的文字内容")]
    report = C.check({"3-3": items}, index, threshold=0.5)["3-3"]
    assert report["n"] == 3 and report["items"] == [0] and report["share"] == pytest.approx(1 / 3)
    assert report["max_overlap"] == pytest.approx(1.0, abs=0.1)
    assert 0.2 < index.overlap(C.item_text(items[2])) < 0.5  # partial overlap stays under the threshold
    assert C.check({"3-3": items}, index, threshold=0.2)["3-3"]["items"] == [0, 2]


def test_punctuation_and_spaces_do_not_hide_a_copy():
    index = C.NgramIndex(n=4)
    index.add("盗窃公私财物，数额较大的，处三年以下有期徒刑")
    assert index.overlap("盗窃公私财物 数额较大的 处三年以下有期徒刑") == 1.0


def test_text_files_and_errors(tmp_path):
    (tmp_path / "a.txt").write_text("第一条 为了惩罚犯罪", encoding="utf-8")
    assert C.training_texts(tmp_path / "a.txt") == ["第一条 为了惩罚犯罪"]
    with pytest.raises(DataError, match="no such file"):
        C.training_texts(tmp_path / "missing.jsonl")
    with pytest.raises(ValueError, match="threshold"):
        C.check({}, C.NgramIndex(), threshold=0)
