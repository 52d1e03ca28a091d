"""Finding citations in text and verifying them; tools/check_citations.py end to end."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tools.check_citations import main, parse_args
from utils.common.datafiles import DataError
from utils.legal.citations import check_citations, quote_similarity, summarize
from utils.legal.statutes import StatuteStore

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def store() -> StatuteStore:
    return StatuteStore.load()


def _one(text, store):
    verdicts = check_citations(text, store)
    assert len(verdicts) == 1, [v.text for v in verdicts]
    return verdicts[0]


@pytest.mark.parametrize(
    ("text", "cited", "law", "number", "suffix", "paragraph"),
    [
        ("根据《刑法》第二百六十四条的规定处罚。", "《刑法》第二百六十四条", "中华人民共和国刑法", 264, 0, None),
        ("依据劳动合同法第82条第二款，应支付二倍工资。", "劳动合同法第82条第二款", "中华人民共和国劳动合同法", 82, 0, 2),
        ("《中华人民共和国民法典》第一千二百五十四条", "《中华人民共和国民法典》第一千二百五十四条", "中华人民共和国民法典", 1254, 0, None),
        ("醉驾适用刑法第一百三十三条之一。", "刑法第一百三十三条之一", "中华人民共和国刑法", 133, 1, None),
        ("违反消保法第55条的，退一赔三。", "消保法第55条", "中华人民共和国消费者权益保护法", 55, 0, None),
        ("中华人民共和国刑法第二十条规定了正当防卫。", "中华人民共和国刑法第二十条", "中华人民共和国刑法", 20, 0, None),
    ],
)
def test_citation_forms_verified(store, text, cited, law, number, suffix, paragraph):
    v = _one(text, store)
    assert (v.text, v.law_name, v.number, v.suffix, v.paragraph) == (cited, law, number, suffix, paragraph)
    assert v.status == "verified" and v.in_force and v.article_text and not v.inferred_law
    assert text[v.start:v.end] == cited


def test_bare_articles_carry_the_law_forward(store):
    text = "《刑法》第二百六十四条规定了盗窃罪，第二百六十七条规定了抢夺罪、第269条规定了转化抢劫。本法第二十条另有规定。"
    verdicts = check_citations(text, store)
    assert [(v.number, v.inferred_law) for v in verdicts] == [(264, False), (267, True), (269, True), (20, True)]
    assert all(v.law_name == "中华人民共和国刑法" and v.status == "verified" for v in verdicts)


def test_bare_article_without_any_law_is_not_a_citation(store):
    assert check_citations("第十条规定了什么？请看第三条。", store) == []


@pytest.mark.parametrize(
    ("text", "status", "message"),
    [
        ("《刑法》第九百条规定了此罪。", "not_found", "has no 第九百条"),
        ("依照《合同法》第五十二条，合同无效。", "repealed", "repealed on 2021-01-01"),
        ("依据婚姻法第三十二条判决离婚。", "repealed", "民法典"),
        ("依据环境保护法第六十四条。", "repealed", "已废止"),
        ("刑法第一百九十九条已经删去。", "repealed", "deleted"),
        ("根据《火星法》第三条处理。", "unknown_law", "unknown law '火星法'"),
        ("我们依据火星法第3条处理。", "unknown_law", "unknown law '火星法'"),
        ("民法典第一千零七十七条第九款", "not_found", "paragraph"),
    ],
)
def test_problem_citations(store, text, status, message):
    v = _one(text, store)
    assert v.status == status and message in v.message


def test_law_mentions_without_article(store):
    verdicts = check_citations("根据合同法的规定，双方是买卖合同法律关系；另见《劳动法》。", store)
    assert [(v.text, v.status) for v in verdicts] == [("合同法", "repealed"), ("《劳动法》", "law_in_force")]
    assert check_citations("劳动合同法和民法典都有规定。", store) == []  # unbracketed laws in force: context only


def test_quotes_compared_with_the_article(store):
    good = _one("《刑法》第二百六十四条规定：“盗窃公私财物，数额较大的，或者多次盗窃、入户盗窃的，处三年以下有期徒刑”。", store)
    assert good.quote_matches and good.quote_similarity == 1.0
    bad = _one("《刑法》第二百六十四条规定：“抢劫他人财物的，处十年以上有期徒刑”。", store)
    assert bad.status == "verified" and bad.quote_matches is False and "does not match" in bad.message
    before = _one("“禁止从建筑物中抛掷物品。”（《民法典》第一千二百五十四条）", store)
    assert before.quote_matches
    assert quote_similarity("处三年以下有期徒刑", "处三年以下有期徒刑") == 1.0
    assert quote_similarity("的处人", "处三年以下有期徒刑的人") < 0.5


GAMBLING = "根据《刑法》第三百零三条规定：“以营利为目的，聚众赌博或者以赌博为业的，处{}有期徒刑”"


@pytest.mark.parametrize("text, kept", [
    # a wrong penalty (issue 31: the demo model's answer, similarity 0.878, passed); the article also says 五年以上十年以下
    # further on, for 开设赌场 — a quote that skips there is no more faithful
    (GAMBLING.format("五年以上十年以下"), False),
    (GAMBLING.format("三年以下"), True),  # the exact quote passes
    (GAMBLING.format("三年以上"), False),  # 以上 for 以下
    ("《劳动合同法》第八十二条规定：“用人单位自用工之日起超过一个月不满一年未与劳动者订立书面劳动合同的，应当向劳动者每月支付三倍的工资。”", False),
    ("《劳动合同法》第八十二条规定：“用人单位自用工之日起超过一个月不满一年未与劳动者订立书面劳动合同的，应当向劳动者每月支付二倍的工资。”", True),
    ("《民法典》第一千零四十七条规定：“结婚年龄，男不得早于二十周岁，女不得早于二十周岁。”", False),  # a dropped 二
    ("《民法典》第一千零四十七条规定：“结婚年龄，男不得早于二十二周岁……”", True),  # an excerpt ending in an ellipsis
    ("《民法典》第六百八十条规定：“禁止高利放贷，借款的利率不得违反国家有关规定。”", True),  # no number to keep
])
def test_a_quote_must_keep_every_number(store, text, kept):
    verdict = _one(text, store)
    assert verdict.status == "verified" and verdict.quote_matches is kept, verdict.message
    assert (verdict.numbers_changed is None) is kept
    if not kept and verdict.quote_similarity >= 0.8:
        assert "the quote changes a number" in verdict.message


@pytest.mark.parametrize("text, meant", [("根据《民法典》第六百八条规定", "第六百八十条"), ("《刑法》第二百六三条", "第二百六十三条"),
                                         ("《刑法》第二百六四条", "第二百六十四条")])
def test_a_garbled_article_number_is_malformed_not_another_article(store, text, meant):
    verdict = _one(text, store)  # 六百八 read leniently is 608, 二百六三 is 203: never reported as those articles
    assert verdict.status == "malformed_number" and verdict.number is None and meant in verdict.message


def test_verdicts_are_json_serialisable(store):
    verdicts = check_citations("依据《刑法》第264条和《合同法》第52条。", store)
    json.dumps([v.to_dict() for v in verdicts], ensure_ascii=False)
    assert summarize(verdicts) == {"verified": 1, "law_in_force": 0, "not_found": 0, "repealed": 1, "unknown_law": 0,
                                   "not_in_store": 0, "malformed_number": 0, "quote_mismatch": 0, "not_relevant": 0,
                                   "confirmed": 0}  # confirmed needs the question (utils/legal/rag.judge_relevance)


def _table(lines: list[str]) -> dict:
    return {" ".join(line.split()[:-2] if "%" in line else line.split()[:-1]): line.split()[-2 if "%" in line else -1]
            for line in lines}


def test_check_citations_tool(tmp_path, capsys):
    results = tmp_path / "results.jsonl"
    rows = [{"answer": "依据《刑法》第二百六十四条处罚；见第二百六十七条。"},
            {"answer": "依照《合同法》第五十二条，合同无效。《刑法》第九百条。"}, {"answer": "无引用。"},
            {"answer": "《刑法》第二百六十四条规定：“抢劫他人财物的，处十年以上有期徒刑”。"}]
    results.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    out = tmp_path / "verdicts.jsonl"
    assert main(parse_args([str(results), "--output", str(out)])) == 0
    printed = capsys.readouterr().out.splitlines()
    # like a linter: every wrong citation first (file:line: citation: verdict: why), then the summary
    assert printed[:3] == [
        f"{results}:2: 《合同法》第五十二条: repealed: 中华人民共和国合同法 is not in force (repealed on 2021-01-01, "
        "replaced by 中华人民共和国民法典)",
        f"{results}:2: 《刑法》第九百条: not_found: 中华人民共和国刑法 has no 第九百条",
        f"{results}:4: 《刑法》第二百六十四条: quote_mismatch: 中华人民共和国刑法 第二百六十四条 exists and is in force; "
        "the quoted text does not match the article (similarity 0.625)"]
    assert printed[3] == "" and printed[-2:] == ["3 wrong citations (listed above)", f"wrote 4 records → {out}"]
    table = _table(printed[4:13])
    assert table["citations"] == "5" and table["records citing something"] == "3"
    assert (table["verified"], table["repealed"], table["not_found"], table["unknown_law"]) == ("3", "1", "1", "0")
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["summary"]["verified"] for r in records] == [2, 0, 0, 1]
    assert main(parse_args([str(results), "--strict"])) == 2
    capsys.readouterr()

    assert main(parse_args([str(results), "--summary_only"])) == 0
    summary = capsys.readouterr().out.splitlines()
    assert not any(str(results) in line for line in summary) and _table(summary[:9])["citations"] == "5"
    assert summary[-1] == "3 wrong citations"


def test_check_citations_tool_errors(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"answer": "好"}\n{"output": "x"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.jsonl:2: field 'answer' must be a string"):
        main(parse_args([str(bad)]))
    proc = subprocess.run([sys.executable, "tools/check_citations.py", str(tmp_path / "none.jsonl")],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 1 and proc.stderr.startswith("check_citations: error: ") and len(proc.stderr.splitlines()) == 1


@pytest.mark.parametrize("answer, strict_exit", [
    ("另见《劳动法》，以及刑法的规定。", 0),  # laws in force named without an article: nothing wrong
    ("依据《刑法》第二百六十四条处罚。", 0),
    ("《刑法》第二百六十四条规定：“抢劫他人财物的，处十年以上有期徒刑”。", 2),  # misquoted
    ("依照《合同法》办理。", 2),  # a repealed law
])
def test_strict_flags_only_wrong_citations(tmp_path, answer, strict_exit):
    results = tmp_path / "results.jsonl"
    results.write_text(json.dumps({"answer": answer}, ensure_ascii=False), encoding="utf-8")
    assert main(parse_args([str(results), "--strict"])) == strict_exit


def test_article_after_an_unknown_law_names_that_law():
    verdicts = check_citations("办理《中华人民共和国房屋建筑物业法》第三十五条第十一条执行。")
    assert [v.status for v in verdicts] == ["unknown_law", "unknown_law"]
    assert all("'中华人民共和国房屋建筑物业法'" in v.message for v in verdicts)  # not "unknown law ''"
    assert verdicts[1].inferred_law and verdicts[1].law_written == ""
