"""Documents beyond laws (utils/legal/documents.py, the store, the checker, retrieval, tools/import_statutes.py):
LawRefBook's markdown parsed rule by rule on files written here, a handful of real files from ../shared/lawrefbook,
and the shipped interpretations and regulations cited, verified and retrieved (issue 30)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from utils.common.datafiles import DataError
from utils.legal.citations import check_citations
from utils.legal.documents import (
    SHORT_TITLES,
    Document,
    import_lawrefbook,
    merge_documents,
    parse_lawrefbook,
    read_documents,
    settle_versions,
    title_key,
    write_documents,
)
from utils.legal.statutes import LAW_TYPES, StatuteError, StatuteStore, doc_types_option

ROOT = Path(__file__).resolve().parent.parent
LAWREFBOOK = ROOT.parent / "shared" / "lawrefbook"
needs_lawrefbook = pytest.mark.skipif(not (LAWREFBOOK / "司法解释").is_dir(),
                                      reason=f"LawRefBook not found at {LAWREFBOOK} (a checkout of LawRefBook/Laws)")

LOANS = """# 最高人民法院关于审理借贷案件的规定

2015年6月23日 最高人民法院审判委员会第1655次会议通过

2020年12月23日 最高人民法院审判委员会第1823次会议修正

2021年1月1日 施行

<!-- INFO END -->

为正确审理借贷纠纷案件，制定本规定。

## 第一章 一般规定

第一条 本规定所称的借贷，是指资金融通的行为。

经批准的金融机构，不适用本规定。

第二条 自然人之间的借款合同具有下列情形之一的，可以视为合同成立：

（一）以现金支付的，自借款人收到借款时；

（二）以银行转账支付的，自资金到达借款人账户时。

第二章 利息
\u200b
第三条 借贷双方没有约定利息的，不予支持。

第三条 重复的条文。

第四条 利率超过四倍的除外。

附 则

第五条 本规定自2021年1月1日起施行。
续表
续表
"""


def test_lawrefbook_file_rules():
    doc = parse_lawrefbook(LOANS, "司法解释", "test.md", "2020-12-29")
    assert (doc.title, doc.doc_type, doc.issuer) == ("最高人民法院关于审理借贷案件的规定", "司法解释", "最高人民法院")
    # the latest event of each kind; the file-name date is the version
    assert (doc.promulgated, doc.effective, doc.version) == ("2020-12-23", "2021-01-01", "2020-12-29")
    numbers = [a["number"] for a in doc.articles]
    assert numbers == ["第一条", "第二条", "第三条", "第四条", "第五条"] and doc.duplicates == 1  # first text kept
    first, second, third, fourth, fifth = doc.articles
    assert first["text"] == "本规定所称的借贷，是指资金融通的行为。\n经批准的金融机构，不适用本规定。"  # paragraphs joined
    assert second["text"].count("\n（") == 2 and first["chapter"] == "第一章 一般规定"
    assert third["chapter"] == "第二章 利息" and third["text"] == "借贷双方没有约定利息的，不予支持。"  # plain heading
    assert fourth["text"] == "利率超过四倍的除外。"  # the bare 「附 则」 before an article is a heading, not text
    assert fifth["chapter"] == "附 则" and fifth["text"] == "本规定自2021年1月1日起施行。"  # 续表 lines dropped
    assert all("\u200b" not in a["text"] for a in doc.articles)
    reply = parse_lawrefbook("# 最高人民法院关于某问题的批复\n<!-- INFO END -->\n\n经研究，答复如下：\n\n同意。\n", "司法解释")
    assert [(a["number"], a["text"]) for a in reply.articles] == [("全文", "经研究，答复如下：\n同意。")]
    with pytest.raises(DataError, match="x.md: no '<!-- INFO END -->'"):
        parse_lawrefbook("# 标题\n第一条 内容", "司法解释", "x.md")
    with pytest.raises(DataError, match="no '# title'"):
        parse_lawrefbook("2020年1月1日 施行\n<!-- INFO END -->\n第一条 内容", "司法解释", "y.md")


def test_issuers_and_title_keys():
    assert parse_lawrefbook("# 物业管理条例\n<!-- INFO END -->\n第一条 x", "行政法规").issuer == "国务院"
    both = parse_lawrefbook("# 最高人民法院 最高人民检察院关于办理盗窃刑事案件的解释\n<!-- INFO END -->\n第一条 x", "司法解释")
    assert both.issuer == "最高人民法院、最高人民检察院"
    assert title_key("最高人民法院 最高人民检察院关于适用〈中华人民共和国刑法〉的解释") == \
        title_key("最高人民法院、最高人民检察院关于适用《刑法》的解释")


def _doc(title, version, articles=1, status="in_force"):
    return Document(title, "司法解释", version=version, status=status,
                    articles=[{"number": f"第{'一二三'[i]}条", "text": "x"} for i in range(articles)])


def test_versions_newest_in_force_trial_superseded_duplicates_once(tmp_path):
    docs = settle_versions([_doc("规定A", "2015-01-01"), _doc("规定A", "2020-12-29"), _doc("规则（试行）", "2012-01-01"),
                            _doc("规则", "2019-12-02")])
    status = {(d.title, d.version): d.status for d in docs}
    assert status == {("规定A", "2020-12-29"): "in_force", ("规定A", "2015-01-01"): "superseded",
                      ("规则", "2019-12-02"): "in_force", ("规则（试行）", "2012-01-01"): "superseded"}
    # a version filed twice (two folders) is imported once: the copy with more articles
    for folder in ("司法解释", "行政法规"):
        (tmp_path / folder).mkdir()
    (tmp_path / "司法解释" / "规定B(2020-01-01).md").write_text("# 规定B\n<!-- INFO END -->\n第一条 a\n\n第二条 b\n")
    (tmp_path / "行政法规" / "规定B(2020-01-01).md").write_text("# 规定B\n<!-- INFO END -->\n第一条 a\n")
    (tmp_path / "司法解释" / "_index.md").write_text("---\n")
    imported, stats = import_lawrefbook(tmp_path)
    assert len(imported) == 1 and len(imported[0].articles) == 2 and stats["duplicate_files_dropped"] == 1
    # a later file's version replaces the same version of an earlier file (the user's data/statutes)
    mine = _doc("规定A", "2020-12-29", articles=3)
    merged = merge_documents([docs, [mine]])
    assert [len(d.articles) for d in merged if d.title == "规定A" and d.status == "in_force"] == [3]


def test_documents_format_round_trip_and_errors(tmp_path):
    docs = [_doc("规定A", "2020-12-29", 2), _doc("规定A", "2015-01-01", status="superseded")]
    write_documents(docs, tmp_path / "d.jsonl.xz")
    back = read_documents(tmp_path / "d.jsonl.xz")
    assert [len(d.articles) for d in back] == [2, 0]  # superseded: known, its articles not written
    bad = tmp_path / "bad.jsonl"
    one = '"articles": [{"number": "第一条", "text": "x"}]'
    for line, message in [('{"title": "x", "doc_type": "法规"}', "'doc_type' must be one of"),
                          ('{"title": "x", "doc_type": "司法解释", "effective": "2021年1月1日", ' + one + "}", "YYYY-MM-DD"),
                          ('{"title": "x", "doc_type": "司法解释", "version": "2023-02-30", ' + one + "}", "a date"),
                          ('{"title": "x", "doc_type": "司法解释", "status": "old"}', "got 'old'"),
                          ('{"title": "x", "doc_type": "司法解释"}', "needs its 'articles'"),
                          ('{"title": "x", "doc_type": "司法解释", "articles": [{"number": 1}]}', "articles\\[0\\]"),
                          ('{"title": "x", "doc_type": "司法解释", "articles": [{"number": "第一条", "text": " "}]}',
                           "non-empty 'text'"),
                          ('{"title": "x", "doc_type": "司法解释", "articles": [{"number": "一条", "text": "x"}]}',
                           "never be cited"),
                          ('{"title": "x", "doc_type": "司法解释", "articles": [{"number": "第一条", "text": "a"}, '
                           '{"number": "第一条", "text": "b"}]}', "appears twice"),
                          ('{"doc_type": "司法解释"}', "non-empty 'title'"), ("{", "not JSON")]:
        bad.write_text('{"title": "ok", "doc_type": "行政法规", ' + one + '}\n' + line + "\n", encoding="utf-8")
        with pytest.raises(DataError, match=rf"^[^\n]*bad.jsonl:2: {'' if message == 'not JSON' else '(?!not JSON)'}.*{message}"):
            read_documents(bad)


def test_a_store_with_a_users_documents(tmp_path):
    from utils.legal.statutes import default_db_path

    (tmp_path / "mine.jsonl").write_text(json.dumps({
        "title": "某某市物业管理条例", "doc_type": "地方性法规", "version": "2022-01-01",
        "articles": [{"number": "第七条", "text": "业主应当按时交纳物业服务费用。"}]}, ensure_ascii=False) + "\n" +
        json.dumps({"title": "中华人民共和国刑法", "doc_type": "法律", "articles": [{"number": "第一条", "text": "x"}]},
                   ensure_ascii=False) + "\n",
        encoding="utf-8")
    store = StatuteStore.load(default_db_path(), documents=[tmp_path / "mine.jsonl"])
    assert store.stats["documents"] == {"地方性法规": 1} and store.stats["documents_in_laws_db"] == 1  # 刑法 left to it
    (verdict,) = check_citations("依据《某某市物业管理条例》第七条，业主应当按时交纳物业服务费用。", store)
    assert verdict.status == "verified" and verdict.article_text == "业主应当按时交纳物业服务费用。"
    assert StatuteStore.load(default_db_path()).stats["documents"] == {}  # another db_path: no default documents


@pytest.fixture(scope="module")
def store() -> StatuteStore:
    return StatuteStore.load()


@pytest.mark.parametrize("text, title, number", [
    ("《最高人民法院关于审理民间借贷案件适用法律若干问题的规定》第二十五条", "最高人民法院关于审理民间借贷案件适用法律若干问题的规定", 25),
    ("《最高人民法院关于适用〈中华人民共和国民法典〉有关担保制度的解释》第二十五条", "担保制度", 25),
    ("《最高人民法院关于适用《民法典》有关担保制度的解释》第二十五条", "担保制度", 25),
    ("最高人民法院关于适用《民法典》有关担保制度的解释第二十五条", "担保制度", 25),  # LeCoQA's gold names
    ("依照《民间借贷司法解释》第二十五条", "民间借贷", 25),
    ("根据《劳动争议解释（一）》第三十二条", "劳动争议案件适用法律问题的解释（一）", 32),
    ("民诉法解释第二百零八条", "适用《中华人民共和国民事诉讼法》的解释", 208),
    ("物业管理条例第七条", "物业管理条例", 7),
    ("《中华人民共和国政府信息公开条例》第十九条", "政府信息公开条例", 19),
])
def test_citations_of_interpretations_and_regulations_verify(store, text, title, number):
    (verdict,) = check_citations(text, store)
    assert verdict.status == "verified" and title in verdict.law_name and verdict.number == number, verdict


def test_the_checker_tells_not_in_the_store_from_unknown(store):
    (held,) = check_citations("《最高人民法院关于审理劳动争议案件适用法律问题的解释（二）》第十条", store)
    assert held.status == "not_in_store" and "not in the statute store" in held.message  # a real, repealed one
    (local,) = check_citations("《某某市物业服务收费管理办法》第三条", store)
    assert local.status == "not_in_store"
    (made_up,) = check_citations("《劳动者工资保障法》第三条", store)
    assert made_up.status == "unknown_law"
    # the Civil Code named inside an interpretation's title is not a citation of the Code
    verdicts = check_citations("最高人民法院关于适用《民法典》有关担保制度的解释第二十五条规定了什么？", store)
    assert [v.law_name for v in verdicts] == [store.resolve_law("担保制度解释").name]


def test_every_short_title_names_a_shipped_document(store):
    for short, title in SHORT_TITLES.items():
        law = store.resolve_law(short)
        assert law is not None and law.doc_type == "司法解释" and law.in_force, short
        assert title_key(law.name) == title_key(title), short


def test_shipped_store_figures_and_types(store):
    assert store.stats["documents"]["司法解释"] >= 400 and store.stats["documents"]["行政法规"] >= 600
    assert store.stats["documents_superseded"] >= 40
    spc = store.resolve_law("民间借贷规定")
    assert (spc.issuer, spc.doc_type, spc.effective) == ("最高人民法院", "司法解释", "") and spc.source.startswith(
        "LawRefBook/Laws@2f4c5c2")
    assert store.superseded  # older versions stay known
    assert len(store.current_articles(LAW_TYPES)) < len(store.current_articles())
    assert doc_types_option("all") is None and doc_types_option("laws") == LAW_TYPES
    with pytest.raises(StatuteError, match="--doc_types"):
        doc_types_option("法规")


def test_retrieval_shows_the_type_of_a_document(store):
    from utils.legal.rag import prepare

    context = prepare("借钱给朋友约定的利息太高了，法律保护多少？", 5)
    assert "《最高人民法院关于审理民间借贷案件适用法律若干问题的规定》第二十八条（司法解释）\n" in context.input
    assert "[1] 《民法典》第六百八十条\n" in context.input  # a law says no type, as before


@needs_lawrefbook
def test_real_lawrefbook_files():
    loans = parse_lawrefbook((LAWREFBOOK / "司法解释" / "最高人民法院关于审理民间借贷案件适用法律若干问题的规定(2020-12-29).md")
                             .read_text(encoding="utf-8"), "司法解释")
    assert len(loans.articles) == 31 and loans.articles[24]["number"] == "第二十五条"
    assert "一年期贷款市场报价利率四倍" in loans.articles[24]["text"]
    property_rules = next((LAWREFBOOK / "行政法规").glob("物业管理条例*.md"))
    doc = parse_lawrefbook(property_rules.read_text(encoding="utf-8"), "行政法规")
    assert doc.issuer == "国务院" and all(a["chapter"] for a in doc.articles[1:])
    youth = next((LAWREFBOOK / "行政法规").glob("未成年人网络保护条例*.md"))
    chapters = {a["chapter"] for a in parse_lawrefbook(youth.read_text(encoding="utf-8"), "行政法规").articles}
    assert "网络素养促进" in chapters and "法律责任" in chapters  # headings written without 第N章


@needs_lawrefbook
def test_import_tool_reproduces_the_shipped_file(tmp_path):
    out = tmp_path / "lawrefbook.jsonl.xz"
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "import_statutes.py"), "--lawrefbook_dir", str(LAWREFBOOK),
                          "--source", "LawRefBook/Laws@2f4c5c2", "--output", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "司法解释/in_force: 422" in run.stdout
    assert out.read_bytes() == (ROOT / "resources" / "statutes" / "lawrefbook.jsonl.xz").read_bytes()


def test_import_tool_errors(tmp_path):
    tool = [sys.executable, str(ROOT / "tools" / "import_statutes.py")]
    run = subprocess.run([*tool, "--lawrefbook_dir", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and "none of the folders" in run.stderr and run.stderr.count("\n") == 1
    run = subprocess.run([*tool, "--jsonl", "x.jsonl", "--output", "x.txt"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "must end in .jsonl" in run.stderr


def test_answers_citing_an_interpretation_verify_in_the_served_record(store):
    """What infer.py writes and the web UI and the API show (rag.finalize): the interpretation's citation verified,
    its quote compared, and the retrieved article marked cited."""
    from utils.legal.rag import finalize, prepare

    context = prepare("借款利率超过一年期贷款市场报价利率四倍的部分，法院还支持吗？", 5)
    answer = ("根据《民间借贷司法解释》第二十五条规定：“出借人请求借款人按照合同约定利率支付利息的，人民法院应予支持，"
              "但是双方约定的利率超过合同成立时一年期贷款市场报价利率四倍的除外。”")
    record = finalize(answer, context)
    (citation,) = record["citations"]
    assert citation["status"] == "verified" and citation["quote_matches"] and citation["number"] == 25
    assert record["citation_summary"]["verified"] == 1 and record["citation_summary"]["unknown_law"] == 0
    cited = [a for a in record["articles"] if a["cited"]]
    assert [a["citation"] for a in cited] == ["《最高人民法院关于审理民间借贷案件适用法律若干问题的规定》第二十五条"]


def test_articles_of_other_types_weigh_less_in_bm25():
    """utils/legal/bm25.py OTHER_TYPES_WEIGHT (chosen on LeCoQA's train split): an interpretation's article scores that
    share of its BM25 score, a law's its full score."""
    import numpy as np

    from utils.legal.bm25 import OTHER_TYPES_WEIGHT, BM25Index

    index = BM25Index.load()
    query = "借款利率超过四倍的部分"  # names no law and no charge: no other boost applies
    raw, weighted = index.scores(query, boosts=False), index.scores(query)
    other = np.array([a.doc_type not in LAW_TYPES for a in index.articles])
    assert other.any() and 0 < OTHER_TYPES_WEIGHT < 1
    assert np.allclose(weighted[other], OTHER_TYPES_WEIGHT * raw[other]) and np.allclose(weighted[~other], raw[~other])
