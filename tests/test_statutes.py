"""The statute store: cleaning, status, charges, numerals and exact lookup over the citation forms."""

import pytest

from utils.legal.statutes import (
    KNOWN_REPEALED,
    StatuteError,
    StatuteStore,
    article_label,
    cn_to_int,
    default_charges_path,
    int_to_cn,
    load_charges,
    normalise_law_name,
)


@pytest.fixture(scope="session")
def store() -> StatuteStore:
    return StatuteStore.load()


def test_theft_article_and_charge(store):
    article = store.parse_citation("《刑法》第二百六十四条")
    assert "盗窃公私财物" in article.text
    assert article.charges == ("盗窃罪",)
    assert article.law_name == "中华人民共和国刑法" and article.short_name == "刑法"
    assert (article.number, article.suffix, article.number_cn) == (264, 0, "第二百六十四条")
    assert article.chapter == "第五章 侵犯财产罪"


def test_civil_code_has_1260_articles(store):
    articles = store.articles_of("民法典")
    assert len(articles) == 1260
    assert [a.number for a in articles] == list(range(1, 1261))


def test_status_trap_criminal_law_current_repealed_law_not(store):
    criminal = store.resolve_law("刑法")
    assert criminal.status == "已被修改" and criminal.in_force  # the DB label is about Amendment XII
    assert store.lookup("刑法", 264).in_force
    repealed = store.resolve_law("环境保护法")  # in laws.db, replaced by 生态环境法典
    assert repealed.status == "已废止" and not repealed.in_force
    assert not store.articles_of(repealed)[0].in_force
    land = store.resolve_law("农村土地承包法")  # wrongly labelled 已废止
    assert land.status == "已废止" and land.in_force and land.note


@pytest.mark.parametrize("short", sorted(KNOWN_REPEALED))
def test_known_repealed_laws_absent_from_db(store, short):
    law = store.resolve_law(f"《{short}》")
    assert law is not None and not law.in_force and law.law_id is None
    assert "民法典" in law.note
    with pytest.raises(StatuteError, match="not in force"):
        store.parse_citation(f"《{short}》第一条")


def test_only_current_versions_kept(store):
    names = [law.name for law in store.laws]
    assert len(names) == len(set(names))
    assert store.stats["superseded_versions_dropped"] == 11
    assert store.resolve_law("宪法").version_date == "2018-03-11"


@pytest.mark.parametrize(
    ("citation", "law", "number", "suffix", "needle"),
    [
        ("《刑法》第二百六十四条", "中华人民共和国刑法", 264, 0, "盗窃"),
        ("刑法第264条", "中华人民共和国刑法", 264, 0, "盗窃"),
        ("民法典第一千二百五十四条", "中华人民共和国民法典", 1254, 0, "抛掷物品"),
        ("《中华人民共和国民法典》第1254条", "中华人民共和国民法典", 1254, 0, "抛掷物品"),
        ("中华人民共和国劳动合同法第八十二条", "中华人民共和国劳动合同法", 82, 0, "二倍的工资"),
        ("刑法第一百三十三条之一", "中华人民共和国刑法", 133, 1, "醉酒驾驶"),
        ("《刑法》第133条之二", "中华人民共和国刑法", 133, 2, "公共交通工具"),
        ("《中华人民共和国刑法（2020修正）》第二十条", "中华人民共和国刑法", 20, 0, "正当防卫"),
        ("消保法第二十五条", "中华人民共和国消费者权益保护法", 25, 0, "七日"),
        ("《民法典》 第十条", "中华人民共和国民法典", 10, 0, "习惯"),
    ],
)
def test_lookup_citation_forms(store, citation, law, number, suffix, needle):
    article = store.parse_citation(citation)
    assert (article.law_name, article.number, article.suffix) == (law, number, suffix)
    assert needle in article.text


def test_drunk_driving_is_133_1(store):
    assert store.lookup("刑法", 133, 1).charges == ("危险驾驶罪",)
    assert store.lookup("刑法", 133).charges == ("交通肇事罪",)  # the CSV lists both on 133; 危险驾驶 moved


@pytest.mark.parametrize(
    ("citation", "message"),
    [
        ("《刑法》第九百条", "has no 第九百条"),
        ("《刑法》第264条之九", "has no 第二百六十四条之九"),
        ("《火星法》第一条", "unknown law"),
        ("刑法264", "not a citation"),
    ],
)
def test_bad_citations(store, citation, message):
    with pytest.raises(StatuteError, match=message):
        store.parse_citation(citation)


def test_lookup_missing_article_is_none_and_unknown_law_raises(store):
    assert store.lookup("刑法", 900) is None
    with pytest.raises(StatuteError, match="unknown law"):
        store.lookup("火星法", 1)


def test_cleaning(store):
    assert store.stats["glued_headings_stripped"] >= 30
    article = store.lookup("民法典", 204)  # was followed by 「第二编 物 权\n第一分编 通 则」
    assert article.text.endswith("除外。") and "第二编" not in article.text
    assert not any(a.text.rstrip().endswith(("附 则", "通 则")) for a in store.articles)
    deleted = store.lookup("刑法", 199)
    assert deleted.is_deleted and deleted.charges == ()
    assert deleted not in store.current_articles()
    boiler = [a for a in store.articles if a.is_boilerplate]
    assert any(a.text == "违反本法规定，构成犯罪的，依法追究刑事责任。" for a in boiler)
    assert not store.lookup("刑法", 264).is_boilerplate


def test_numerals_round_trip_all_article_labels(store):
    for article in store.articles:
        if article.number is not None:
            assert article_label(article.number, article.suffix) == article.number_cn
    assert [int_to_cn(n) for n in (10, 17, 105, 110, 1005, 1010, 1260)] == [
        "十", "十七", "一百零五", "一百一十", "一千零五", "一千零一十", "一千二百六十"]
    assert cn_to_int("两百") == 200 and cn_to_int("264") == 264
    with pytest.raises(ValueError):
        cn_to_int("二百x")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("《中华人民共和国刑法》", "刑法"), ("刑法", "刑法"), ("民诉法", "民事诉讼法"), (" 《 民法典 》", "民法典"),
     ("中华人民共和国公司法（2023年修订）", "公司法")],
)
def test_normalise_law_name(raw, expected):
    assert normalise_law_name(raw) == expected


def test_charge_table_quirks():
    charges = load_charges(default_charges_path())
    assert charges[(301, 0)] == ("聚众淫乱罪", "引诱未成年人聚众淫乱罪")  # embedded in row 300's text
    assert charges[(162, 1)] == ("隐匿、故意销毁会计凭证、会计账簿、财务会计报告罪",)
    assert charges[(162, 2)] == ("虚假破产罪",)
    assert "对犯行贿罪的处罚" not in charges[(390, 0)]


def test_missing_db_is_a_clear_error(tmp_path):
    with pytest.raises(StatuteError, match="not found"):
        StatuteStore.load(tmp_path / "nope.db")
