"""knowledge_instruct.py: real article texts, seeded determinism, phrasing variety, LawBench exclusions."""

from __future__ import annotations

import json
import re

import pytest

from tools import knowledge_instruct
from tools.knowledge_instruct import TEMPLATES, build, parse_args
from utils.legal.statutes import StatuteStore

THEFT = "盗窃公私财物，数额较大的，或者多次盗窃、入户盗窃、携带凶器盗窃、扒窃的"


@pytest.fixture(scope="module")
def store():
    return StatuteStore.load()


@pytest.fixture(scope="module")
def lawbench_dir(tmp_path_factory, store):
    """A LawBench-shaped folder: 1-1 asks for 刑法 art. 264 and 公司法 art. 60 (with the department prefix, as
    LawBench writes it); a 3-8 answer quotes 民法典 art. 188 in full; a 3-3 answer is a bare charge name."""
    root = tmp_path_factory.mktemp("lawbench")
    limitation = store.lookup("民法典", 188).text
    one_one = [
        {"instruction": "回答以下问题，只需直接给出法条内容:", "question": "刑法第二百六十四条的内容是什么？", "answer": "答案:" + THEFT},
        {"instruction": "回答以下问题，只需直接给出法条内容:", "question": "民法商法公司法第六十条的内容是什么？", "answer": "答案:…"},
    ]
    others = {
        "3-8": [{"instruction": "请回答", "question": "欠钱不还多久就不能起诉了？", "answer": "法律依据:" + limitation}],
        "3-3": [{"instruction": "请给出罪名", "question": "事实:某甲窃取财物。", "answer": "罪名:盗窃"}],
    }
    for shots in ("zero_shot", "one_shot"):
        (root / "data" / shots).mkdir(parents=True)
        (root / "data" / shots / "1-1.json").write_text(json.dumps(one_one, ensure_ascii=False), encoding="utf-8")
        for task, items in others.items():
            (root / "data" / shots / f"{task}.json").write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")
    return root


def run(lawbench_dir, *extra):
    return build(parse_args(["--output", "unused.jsonl", "--lawbench_dir", str(lawbench_dir), *extra]))


@pytest.fixture(scope="module")
def built(lawbench_dir):
    return run(lawbench_dir, "--seed", "7")


def test_outputs_are_the_real_article_texts(built, store):
    items, stats = built
    assert {item["kind"] for item in items} == set(TEMPLATES) | {"identity", "out_of_scope"}
    assert all(s["kept"] > 0 for s in stats.values())
    by_kind = {}
    for item in items:
        by_kind.setdefault(item["kind"], []).append(item)
    for item in by_kind["article_content"][:300]:
        assert item["output"] == store.parse_citation(item["source"]).text
    for item in by_kind["charge_definition"]:
        article = store.parse_citation(item["source"])
        charge = re.match(r"^(.+?罪)规定在", item["output"]).group(1)
        assert charge in article.charges and article.text in item["output"] and charge in item["instruction"]
    for item in by_kind["article_charge"]:
        article = store.parse_citation(item["source"])
        assert item["input"] == article.text and all(c in item["output"] for c in article.charges)
    for item in by_kind["article_topic"][:100]:
        article = store.parse_citation(item["source"])
        assert article.text in item["output"] and article.number_cn in item["output"]
    # 盗窃罪 maps to its defining article, not to the ones that only refer to it.
    theft = [i for i in by_kind["charge_definition"] if i["output"].startswith("盗窃罪规定在")]
    assert theft == []  # excluded: 刑法 art. 264 is asked in 1-1 (see the exclusion test)
    fraud = next(i for i in by_kind["charge_definition"] if i["output"].startswith("诈骗罪规定在"))
    assert fraud["source"] == "《刑法》第二百六十六条"


def test_deterministic_with_a_seed(lawbench_dir, built, tmp_path):
    again, _ = run(lawbench_dir, "--seed", "7")
    assert again == built[0]
    other, _ = run(lawbench_dir, "--seed", "8", "--kinds", "charge_definition")
    same_kind = [i for i in built[0] if i["kind"] == "charge_definition"]
    assert sorted(i["source"] for i in other) == sorted(i["source"] for i in same_kind)  # same facts …
    assert [i["instruction"] for i in other] != [i["instruction"] for i in same_kind]  # … other phrasing/order
    # main() writes the same items, atomically, as JSONL
    out = tmp_path / "k.jsonl"
    assert knowledge_instruct.main(["--output", str(out), "--lawbench_dir", str(lawbench_dir), "--seed", "7",
                                    "--kinds", "charge_definition", "--max_per_kind", "5"]) == 0
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 5 and {i["kind"] for i in lines} == {"charge_definition"}
    assert not list(tmp_path.glob(".k.jsonl.tmp*"))


def test_phrasing_variety(built):
    items, _ = built
    for kind, templates in TEMPLATES.items():
        patterns = [re.compile("^" + re.escape(t).replace(r"\{law\}", ".+").replace(r"\{num\}", "第.+条(?:之.+)?")
                               .replace(r"\{topic\}", "“.+”").replace(r"\{charge\}", ".+罪") + "$") for t in templates]
        used = {next(i for i, p in enumerate(patterns) if p.match(item["instruction"]))
                for item in items if item["kind"] == kind}
        assert used == set(range(len(templates))), kind  # every phrasing occurs, none unaccounted for
    laws = [item["instruction"] for item in items if item["kind"] == "article_content"]
    assert any("中华人民共和国" in q for q in laws) and any("中华人民共和国" not in q for q in laws)


def test_lawbench_overlaps_excluded_and_counted(built, lawbench_dir, capsys, tmp_path):
    items, stats = built
    sources = {item["source"] for item in items}
    assert "《刑法》第二百六十四条" not in sources and "《公司法》第六十条" not in sources  # asked in 1-1
    assert "《民法典》第一百八十八条" not in sources  # its text is a 3-8 answer
    assert not any(THEFT in item["output"] or THEFT in item["input"] for item in items)
    assert stats["article_content"]["excluded_1-1"] == 2
    assert stats["article_charge"]["excluded_1-1"] == 1 and stats["charge_definition"]["excluded_1-1"] >= 1
    assert stats["article_content"]["excluded_ngram"] >= 1
    # a bare label (罪名:盗窃) is not content: 3-3 does not knock out every item that names a charge
    assert any("盗窃" in item["output"] for item in items)
    # without the LawBench filter the same articles come back
    free, free_stats = build(parse_args(["--output", "x.jsonl", "--no_lawbench_check", "--kinds", "article_content"]))
    assert {"《刑法》第二百六十四条", "《公司法》第六十条", "《民法典》第一百八十八条"} <= {i["source"] for i in free}
    assert free_stats["article_content"]["kept"] == stats["article_content"]["kept"] + 2 + stats["article_content"]["excluded_ngram"]
    # the counts are printed
    assert knowledge_instruct.main(["--output", str(tmp_path / "k.jsonl"), "--lawbench_dir", str(lawbench_dir),
                                    "--kinds", "article_charge"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"article_charge\s+\d+\s+1\s+\d+\s+\d+", out) and "2 articles asked in 1-1" in out


def test_missing_lawbench_data_is_an_error(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert knowledge_instruct.main(["--output", str(tmp_path / "k.jsonl"), "--lawbench_dir", str(empty)]) == 1
    err = capsys.readouterr().err
    assert "no zero_shot/*.json" in err and "tools/prepare_lawbench.py" in err
    assert not (tmp_path / "k.jsonl").exists()


def test_default_lawbench_dir_is_the_prepared_one_and_its_absence_says_how_to_get_it(tmp_path, capsys, monkeypatch):
    # Users have no ../shared: the default is what tools/prepare_lawbench.py writes, and the error names that tool.
    monkeypatch.setattr(knowledge_instruct, "DEFAULT_LAWBENCH_DIR", tmp_path / "not-prepared")
    assert knowledge_instruct.main(["--output", str(tmp_path / "k.jsonl")]) == 1
    err = capsys.readouterr().err
    assert f"no LawBench data at {tmp_path / 'not-prepared'}" in err
    assert "python tools/prepare_lawbench.py --output_dir" in err and "--no_lawbench_check" in err
    assert not (tmp_path / "k.jsonl").exists()


def test_bad_arguments():
    with pytest.raises(SystemExit):
        parse_args(["--output", "x.jsonl", "--kinds", "article_content,nonsense"])


def test_identity_and_out_of_scope_items_take_the_assistant_name(lawbench_dir):
    from utils.datagen.persona import is_scope_statement

    items, stats = run(lawbench_dir, "--kinds", "identity,out_of_scope", "--assistant_name", "法小助",
                       "--assistant_maker", "某某大学")
    identity = [i for i in items if i["kind"] == "identity"]
    oos = [i for i in items if i["kind"] == "out_of_scope"]
    assert stats["identity"]["kept"] == len(identity) > 20 and len(oos) > 40
    assert all("法小助" in i["output"] and "LaWGPT" not in i["output"] for i in identity)
    assert any("某某大学" in i["output"] for i in identity)
    assert all(is_scope_statement(i["output"]) and i["source"] == "persona" and set(i) == {
        "instruction", "input", "output", "kind", "source"} for i in oos)


def test_persona_items_carry_the_retrieved_articles_for_law_rag_data(lawbench_dir):
    """A model served with --rag gets articles with "你是谁？" too: law_rag data gives persona items those articles
    (the same text utils/rag.prepare builds when serving), plain data does not."""
    from utils.legal.rag import prepare

    def with_articles(*extra):
        items, _ = run(lawbench_dir, "--kinds", "identity,out_of_scope", *extra)
        return items, [i for i in items if i["input"]]

    items, given = with_articles()
    assert items and not given  # no grounded_answer among --kinds: no articles by default
    items, given = with_articles("--persona_articles", "1")
    assert len(given) > len(items) / 2  # the rest: questions BM25 finds no article for
    for item in given[:5]:
        assert item["input"] == prepare(item["instruction"]).input and item["input"].startswith("[1] 《")
    items, given = with_articles("--persona_articles", "0.5", "--seed", "1")
    assert 0.2 * len(items) < len(given) < 0.6 * len(items)
    args = parse_args(["--output", "x.jsonl", "--kinds", "grounded_answer,identity"])
    assert args.persona_articles == 0.5
    with pytest.raises(SystemExit):
        parse_args(["--output", "x.jsonl", "--kinds", "identity", "--persona_articles", "1.5"])


def test_grounded_answers_cite_and_quote_the_retrieved_gold_or_say_it_is_missing(lawbench_dir, store):
    """input = what --rag retrieves for the question; output cites + quotes the gold article when it is among them
    (the quote checks out), else says the articles do not settle it; held-out gold and 1-1 articles never appear."""
    from utils.datagen.grounded import NOT_SETTLED
    from utils.legal import rag
    from utils.legal.citations import check_citations

    items, stats = run(lawbench_dir, "--kinds", "grounded_answer", "--max_per_kind", "60", "--seed", "3")
    assert stats["grounded_answer"]["kept"] == len(items) == 60
    held_out = knowledge_instruct.held_out_articles(store)
    settled = [i for i in items if i["source"] != "not_settled"]
    assert 0 < len(items) - len(settled) < len(items) / 2  # some, not most, say the articles do not settle it
    for item in items:
        context = rag.prepare(item["instruction"], 3)
        retrieved = {(h.article.law_name, h.article.number, h.article.suffix) for h in context.hits}
        assert (store.lookup("刑法", 264).law_name, 264, 0) not in retrieved  # a 1-1 article, not even as context
        if item in settled:
            assert item["input"] == context.input  # exactly the --rag prompt's articles
            gold = store.parse_citation(item["source"])
            key = (gold.law_name, gold.number, gold.suffix)
            assert key in retrieved and key not in held_out
            verdicts = check_citations(item["output"], store)
            first = verdicts[0]  # the quote itself may name other laws
            assert (first.status, first.law_name, first.number, first.suffix) == ("verified", *key)
            assert first.quote_matches
        else:  # what --rag retrieves, or (gold taken out on purpose) the next article moved up
            cited = re.findall(r"^\[\d\] (《.+》第[^（\n]+)", item["input"], re.M)
            wider = [h.article.citation for h in rag.prepare(item["instruction"], 4).hits]
            assert item["input"] == context.input or (len(cited) == 3 and set(cited) < set(wider))
            assert item["output"] in NOT_SETTLED and not check_citations(item["output"], store)


def test_kind_max_caps_one_kind():
    args = parse_args(["--output", "x.jsonl", "--kinds", "identity,out_of_scope", "--max_per_kind", "3",
                       "--kind_max", "identity=5"])
    items, stats = build(args.__class__(**{**vars(args), "no_lawbench_check": True}))
    assert stats["identity"]["kept"] == 5 and stats["out_of_scope"]["kept"] == 3
    with pytest.raises(SystemExit):
        parse_args(["--output", "x.jsonl", "--kinds", "identity", "--kind_max", "grounded_answer=5"])


def test_earlier_turns_put_grounded_answers_in_a_conversation(lawbench_dir):
    """--earlier_turns: a share of grounded answers follow a turn on another matter (issue 28: a model trained on
    single turns repeated its first answer to an unrelated second question). The answer stays the one for the
    question asked now, and the conversation tokenises with the law_rag template, the earlier turn masked."""
    import random

    from utils.datagen.grounded import add_earlier_turns
    from utils.model.chat_template import make_prompter

    plain, _ = run(lawbench_dir, "--kinds", "grounded_answer,identity", "--max_per_kind", "20", "--seed", "5")
    items, _ = run(lawbench_dir, "--kinds", "grounded_answer,identity", "--max_per_kind", "20", "--seed", "5",
                   "--earlier_turns", "0.5")
    with_turn = [i for i in items if i.get("history")]
    assert 3 <= len(with_turn) <= 17 and all(i["kind"] == "grounded_answer" for i in with_turn)
    by_question = {i["instruction"]: i for i in plain}
    for item in with_turn:
        (question, answer), = item["history"]
        assert question != item["instruction"] and answer != item["output"]
        assert by_question[item["instruction"]]["output"] == item["output"]  # the answer is unchanged
    assert not any(i.get("history") for i in plain)  # off by default (demo.sh asks for 0.3)
    fake = [{"kind": "grounded_answer", "instruction": "q1", "output": "a1", "_key": 1},
            {"kind": "grounded_answer", "instruction": "q2", "output": "a2", "_key": 1}]
    # the same article, with no other item: nothing to put before it
    assert add_earlier_turns(fake, 1.0, random.Random(0), same_matter=0.0) == {"same_matter": 0, "other_matter": 0}
    assert add_earlier_turns(fake, 1.0, random.Random(0), same_matter=1.0) == {"same_matter": 2, "other_matter": 0}
    long_one = [{"kind": "article_content", "instruction": "q0", "output": "长" * 300, "_key": 2},
                {"kind": "article_charge", "instruction": "q3", "output": "x罪", "_key": 3},
                {"kind": "grounded_answer", "instruction": "q4", "output": "a4", "_key": 4}]
    assert add_earlier_turns(long_one, 1.0, random.Random(0)) == {"same_matter": 0, "other_matter": 0}
    with pytest.raises(SystemExit):
        parse_args(["--output", "x.jsonl", "--earlier_turns", "1.5"])
    item = with_turn[0]
    prompter = make_prompter("law_rag")
    segments = prompter.segments(item["instruction"], item["input"], item["output"], item["history"])
    prompt_text = "".join(text for text, is_response in segments if not is_response)
    answers = [text for text, is_response in segments if is_response]
    assert item["history"][0][0] in prompt_text and item["instruction"] in prompt_text
    assert answers[-1].startswith(item["output"][:20])  # the answer to the question asked now is trained


def test_lecoqa_test_split_is_held_out(lawbench_dir, store, tmp_path):
    """--lecoqa_dir: a LeCoQA test question's gold article is never a grounded item's subject, and an item that copies
    a test text (here a lawyer's answer quoting an article in full) is left out (issue 30: the filters cover every
    document type)."""
    import json

    plain, _ = run(lawbench_dir, "--kinds", "grounded_answer,article_content", "--max_per_kind", "30", "--seed", "3")
    grounded = next(i for i in plain if i["kind"] == "grounded_answer" and i["source"] != "not_settled")
    recited = next(i for i in plain if i["kind"] == "article_content")
    gold = store.parse_citation(grounded["source"])
    leco = tmp_path / "leco"
    (leco / "data" / "example").mkdir(parents=True)
    questions = [{"问题": "一个测试问题？", "答案文本": "律师答：" + recited["output"], "query_id": 1,
                  "match_name": [f"{gold.law_name}{gold.number_cn}"]}]
    (leco / "data" / "example" / "test.json").write_text(json.dumps(questions, ensure_ascii=False), encoding="utf-8")
    items, stats = run(lawbench_dir, "--kinds", "grounded_answer,article_content", "--max_per_kind", "30", "--seed", "3",
                       "--lecoqa_dir", str(leco))
    assert grounded["source"] not in {i["source"] for i in items if i["kind"] == "grounded_answer"}
    assert recited["output"] not in {i["output"] for i in items} and stats["article_content"]["excluded_lecoqa"] >= 1
