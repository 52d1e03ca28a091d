"""benchmarks/bench_followup.py on crafted answers: chats pair questions on other laws, each figure counts what its
docstring says (issue 28: a second, unrelated question in a chat must get its own answer)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_followup as bf  # noqa: E402

from utils.common.datafiles import DataError  # noqa: E402
from utils.legal.statutes import StatuteStore  # noqa: E402

LABOUR = {"law_name": "中华人民共和国劳动合同法", "number": 46, "suffix": 0, "text": "有下列情形之一的，用人单位应当向劳动者支付经济补偿"}
MARRIAGE = {"law_name": "中华人民共和国民法典", "number": 1047, "suffix": 0, "text": "结婚年龄，男不得早于二十二周岁，女不得早于二十周岁。"}
THEFT = {"law_name": "中华人民共和国刑法", "number": 264, "suffix": 0, "text": "盗窃公私财物"}
WAGES = "根据《劳动合同法》第四十六条规定：“有下列情形之一的，用人单位应当向劳动者支付经济补偿。”可以要求经济补偿。"
AGE = "根据《民法典》第一千零四十七条规定：“结婚年龄，男不得早于二十二周岁，女不得早于二十周岁。”男21岁还不能登记结婚。"
STEAL = "根据《刑法》第二百六十四条规定：“盗窃公私财物，数额较大的，处三年以下有期徒刑。”"


@pytest.fixture(scope="module")
def store() -> StatuteStore:
    return StatuteStore.load()


def _answer(i, question, answer, articles, finish="eos"):
    return {"index": i, "instruction": question, "input": "", "answer": answer, "finish_reason": finish,
            "articles": articles}


ALONE = [_answer(0, "工资三个月没发，能走人要补偿吗？", WAGES, [LABOUR]),
         _answer(1, "男21女20，能去领证吗？", AGE, [MARRIAGE]),
         _answer(2, "偷东西会怎么判？", STEAL, [THEFT])]


def test_chats_pair_each_question_with_one_on_another_law(store):
    chats = bf.make_chats(ALONE, store)
    assert [c["instruction"] for c in chats] == [a["instruction"] for a in ALONE]
    for chat in chats:
        (first_question, first_answer), = chat["history"]
        first = ALONE[chat["first_index"]]
        assert first_question == first["instruction"] != chat["instruction"] and first_answer == first["answer"]
    with pytest.raises(DataError, match="another law"):
        bf.make_chats([ALONE[0], _answer(1, "加班费怎么算？", WAGES, [LABOUR])], store)


def test_rate_counts_a_parrot_a_carried_citation_and_an_own_answer(store):
    chats = bf.make_chats(ALONE, store)
    first_of = {c["second_index"]: ALONE[c["first_index"]] for c in chats}
    second = [
        # the parrot of issue 28: the first answer again, its citation carried over
        _answer(0, chats[0]["instruction"], first_of[0]["answer"], [LABOUR]),
        # its own answer, the one it gives alone
        _answer(1, chats[1]["instruction"], AGE, [MARRIAGE]),
        # its own retrieved article, said differently, running into the token limit
        _answer(2, chats[2]["instruction"], "《刑法》第二百六十四条：盗窃公私财物的，", [THEFT], finish="length"),
    ]
    r = bf.rate(ALONE, second, chats, store)
    assert r["n"] == 3
    assert r["repeats_first"] == pytest.approx(1 / 3) and r["chats"][0]["repeats_first"]
    assert r["carries_citation"] == pytest.approx(1 / 3) and r["chats"][0]["carries_citation"]
    assert r["cites_own_retrieved"] == pytest.approx(2 / 3) and r["alone_cites_own_retrieved"] == 1.0
    assert r["same_as_alone"] == pytest.approx(1 / 3) and r["chats"][1]["same_as_alone"]
    assert r["ends"] == pytest.approx(2 / 3) and r["loops"] == 0.0
    with pytest.raises(DataError, match="not the chat's"):
        bf.rate(ALONE, list(reversed(second)), chats, store)
    with pytest.raises(DataError, match="2 second-turn answers for 3 chats"):
        bf.rate(ALONE, second[:2], chats, store)


def test_command_line(tmp_path, capsys, store):
    alone = tmp_path / "alone.jsonl"
    alone.write_text("".join(json.dumps(a, ensure_ascii=False) + "\n" for a in ALONE), encoding="utf-8")
    chats = tmp_path / "chats.jsonl"
    assert bf.main(["chats", "--alone", str(alone), "--output", str(chats)]) == 0
    rows = [json.loads(line) for line in chats.read_text(encoding="utf-8").splitlines()]
    second = tmp_path / "second.jsonl"  # a model that answers each chat as it answers the question alone
    second.write_text("".join(json.dumps(_answer(i, r["instruction"], ALONE[i]["answer"], ALONE[i]["articles"]),
                                         ensure_ascii=False) + "\n" for i, r in enumerate(rows)), encoding="utf-8")
    assert bf.main(["rate", "--alone", str(alone), "--second", str(second), "--chats", str(chats),
                    "--labels", "ideal", "--output_json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "| n chats | ideal (3) |" in out and "| second answer = the answer to it alone | 100% |" in out
    assert json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))["ideal"]["repeats_first"] == 0.0
    assert bf.main(["chats", "--alone", str(tmp_path / "missing.jsonl"), "--output", str(chats)]) == 1
    assert "bench_followup: error:" in capsys.readouterr().err
