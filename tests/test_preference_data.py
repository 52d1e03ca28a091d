"""tools/preference_data.py: every corruption kind fails the citation checker while its chosen side passes; identity
and out-of-scope pairs and items; on-policy ranking with a stand-in generator (resumable); held-out questions unused."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tools import preference_data as pd
from utils.datagen.persona import (
    DEFAULT_NAME,
    IDENTITY_QUESTIONS,
    OUT_OF_SCOPE,
    identity_items,
    is_scope_statement,
    names_assistant,
    out_of_scope_items,
)
from utils.legal.citations import check_citations
from utils.legal.statutes import StatuteStore
from utils.training.preference_pairs import assess, load_preference_data, pick_pair, tier

ROOT = Path(__file__).resolve().parent.parent
# What the checker must say about the rejected side of each kind.
EXPECTED = {"repealed_law": "repealed", "nonexistent_article": "not_found", "wrong_article": "quote_mismatch",
            "misquote": "quote_mismatch", "unknown_law": "unknown_law"}


@pytest.fixture(scope="module")
def store():
    return StatuteStore.load()


@pytest.fixture(scope="module")
def questions(store):
    """A few store questions: a 民法典 heading (for repealed_law), 刑法 charges, another law's heading."""
    qs = pd.store_questions(store, random.Random(0))
    civil = [q for q in qs if q["article"].short_name == "民法典"][:3]
    criminal = [q for q in qs if q["article"].short_name == "刑法"][:3]
    other = [q for q in qs if q["article"].short_name not in ("民法典", "刑法")][:3]
    return civil + criminal + other


@pytest.mark.parametrize("kind", pd.CORRUPTIONS)
def test_rejected_fails_the_checker_and_chosen_passes(store, questions, kind):
    rng, made = random.Random(1), 0
    for question in questions:
        article = question["article"]
        template, chosen = pd.right_answer(article, rng)
        verdicts = check_citations(chosen, store)
        assert verdicts and all(v.status == "verified" and v.quote_matches for v in verdicts), chosen
        rejected = pd.corrupt(kind, article, template, store, rng)
        if rejected is None:
            continue
        made += 1
        problems = assess(rejected, store).problems
        assert problems and all(p.endswith(EXPECTED[kind]) for p in problems), (rejected, problems)
    assert made >= (3 if kind == "repealed_law" else 6)


def test_legal_refusal_pairs_prefer_the_answer_to_the_scope_statement(store, questions):
    pairs, _ = pd.store_pairs(store, [pd.REFUSAL], random.Random(0), name="法小助")
    assert len(pairs) > 100
    for pair in pairs[:50]:
        assert pd.passes(pair["chosen"], store) and not check_citations(pair["rejected"], store)
        assert is_scope_statement(pair["rejected"]) and "法小助" in pair["rejected"]
        assert not is_scope_statement(pair["chosen"])


def test_repealed_law_names_the_part_the_civil_code_replaced(store):
    rng = random.Random(0)
    for number, old in ((577, "合同法"), (1087, "婚姻法"), (1165, "侵权责任法"), (240, "物权法")):
        article = store.lookup("民法典", number)
        assert f"《{old}》" in pd.corrupt("repealed_law", article, pd.ANSWERS[0], store, rng)


def test_store_pairs_cli_writes_checked_pairs_without_heldout_questions(tmp_path, capsys, monkeypatch):
    heldout = tmp_path / "heldout.jsonl"
    held = "关于检察官的管理，《检察官法》是怎么规定的？请引用具体条文。"
    heldout.write_text(json.dumps({"question": held}, ensure_ascii=False) + "\n" +
                       json.dumps({"question": IDENTITY_QUESTIONS["who"][0]}, ensure_ascii=False) + "\n",
                       encoding="utf-8")
    out = tmp_path / "pairs.jsonl"
    assert pd.main(["--output", str(out), "--max_questions", "40", "--no_lawbench_check", "--heldout", str(heldout),
                    "--seed", "3"]) == 0
    pairs = load_preference_data(out)
    kinds = {p["kind"] for p in pairs}
    assert kinds >= {"nonexistent_article", "unknown_law", "identity", "out_of_scope"}
    assert all(p["instruction"] not in (held, IDENTITY_QUESTIONS["who"][0]) for p in pairs)
    assert "excluded_heldout 2" in capsys.readouterr().out  # the identity question, with each of its two answers
    first = out.read_text(encoding="utf-8")
    assert pd.main(["--output", str(out), "--max_questions", "40", "--no_lawbench_check", "--heldout", str(heldout),
                    "--seed", "3"]) == 0
    assert out.read_text(encoding="utf-8") == first  # seeded: the same file again


def test_with_articles_gives_pairs_the_retrieved_articles_and_a_store_pair_its_own(tmp_path, store):
    out = tmp_path / "pairs.jsonl"
    assert pd.main(["--output", str(out), "--max_questions", "30", "--no_lawbench_check", "--heldout", "",
                    "--kinds", "unknown_law,identity", "--with_articles", "1", "--seed", "2"]) == 0
    pairs = load_preference_data(out)
    legal = [p for p in pairs if p["kind"] == "unknown_law"]
    assert legal and all(p["input"].startswith("[1] 《") for p in legal)
    for pair in legal:  # the chosen answer quotes an article that is among those given
        (verdict,) = check_citations(pair["chosen"], store)
        article = store.lookup(verdict.law_name, verdict.number)
        assert f"{article.citation}\n" in pair["input"] or f"{article.citation}（" in pair["input"], pair
    identity = [p for p in pairs if p["kind"] == "identity"]
    given = [p for p in identity if p["input"]]
    assert given and len(given) < len(identity)  # BM25 finds nothing for some "who are you" questions
    for pair in given:  # rejected: the first given article quoted as if it answered (what the SFT model did)
        first = pair["input"].split("\n")[0]
        citation = first[first.index("《"):].split("（")[0]
        assert pair["rejected"].startswith(f"根据{citation}规定：“"), pair
        assert names_assistant(pair["chosen"]) and not names_assistant(pair["rejected"])
    assert all(p["rejected"] in pd.WRONG_IDENTITIES for p in identity if not p["input"])
    assert pd.main(["--output", str(out), "--max_questions", "30", "--no_lawbench_check", "--heldout", "",
                    "--kinds", "unknown_law", "--seed", "2"]) == 0
    assert not any(p["input"] for p in load_preference_data(out))  # default 0: no articles
    with pytest.raises(SystemExit):
        pd.parse_args(["--output", str(out), "--with_articles", "2"])


def test_kind_max_caps_one_kind(tmp_path):
    out = tmp_path / "pairs.jsonl"
    assert pd.main(["--output", str(out), "--max_questions", "40", "--no_lawbench_check", "--heldout", "",
                    "--kinds", "unknown_law,identity,out_of_scope", "--max_per_kind", "3",
                    "--kind_max", "out_of_scope=7", "--kind_max", "identity=0"]) == 0
    kinds = [p["kind"] for p in load_preference_data(out)]
    assert kinds.count("unknown_law") == 3 and kinds.count("out_of_scope") == 7
    assert kinds.count("identity") == len(identity_items())  # 0: all of that kind
    for bad in ("out_of_scope", "misquote=3", "out_of_scope=x"):  # no N, a kind not in --kinds, not a number
        with pytest.raises(SystemExit):
            pd.parse_args(["--output", str(out), "--kinds", "unknown_law,out_of_scope", "--kind_max", bad])


def test_identity_and_out_of_scope_items_and_pairs():
    items = identity_items("法小助", "某某大学")
    assert items and all("法小助" in i["output"] for i in items)
    assert any("某某大学" in i["output"] for i in items)
    oos = out_of_scope_items("法小助")
    assert {i["topic"] for i in oos} == set(OUT_OF_SCOPE)
    assert all(is_scope_statement(i["output"]) and "《" not in i["output"] for i in oos)  # never a legal answer
    pairs = pd.persona_pairs(["identity", "out_of_scope"], random.Random(0), DEFAULT_NAME, "x")
    for pair in pairs:
        if pair["kind"] == "identity":
            assert names_assistant(pair["chosen"]) and not names_assistant(pair["rejected"])
        else:
            assert is_scope_statement(pair["chosen"]) and not is_scope_statement(pair["rejected"])
            assert "《中华人民共和国" in pair["rejected"]


def test_heldout_questions_are_not_training_questions():
    held = [json.loads(line) for line in (ROOT / "resources" / "alignment_heldout.jsonl").open(encoding="utf-8")]
    assert {r["kind"] for r in held} == {"legal", "identity", "out_of_scope"}
    training = {i["instruction"] for i in identity_items() + out_of_scope_items()}
    assert not training & {r["question"] for r in held}
    # The statute answers the project writes are not scope statements; scope statements are.
    assert not is_scope_statement("根据《民法典》第一千零八十七条的规定：“离婚时，夫妻的共同财产由双方协议处理。”")
    assert is_scope_statement("抱歉，这个问题超出了我的服务范围。") and is_scope_statement("我只能回答法律方面的问题。")


def test_tiers_and_pick_pair(store):
    gold = ["《刑法》第二百六十四条"]
    answers = ["依据《刑法》第二百六十四条，盗窃数额较大的处三年以下有期徒刑。", "这要看具体情况。",
               "依据《刑法》第二百六十三条处罚。", "依据《刑》第二百六十四条处罚。"]
    checked = [assess(a, store, gold) for a in answers]
    assert [tier(c) for c in checked] == [3, 1, 2, 0]
    assert pick_pair(answers, checked) == (0, 3)
    assert pick_pair(answers[1:2] * 2, checked[1:2] * 2) is None  # no clear winner


class CannedGenerator:
    """Stands in for a model: per prompt, one answer citing the gold article, one citing an unknown law."""

    def __init__(self):
        self.calls = 0

    def complete(self, prompts, max_new_tokens, temperature, seed):
        self.calls += 1
        return ["依据《刑法》第二百六十四条处罚。" if i % 2 else "依据《刑》第二百六十四条处罚。" for i in range(len(prompts))]


def test_on_policy_pairs_rank_by_the_checker_and_resume(tmp_path, store):
    questions = tmp_path / "q.jsonl"
    questions.write_text("".join(json.dumps({"instruction": f"问题{i}：偷东西怎么判？", "gold": ["《刑法》第二百六十四条"]},
                                            ensure_ascii=False) + "\n" for i in range(3)), encoding="utf-8")
    out = tmp_path / "on_policy.jsonl"
    args = pd.parse_args(["--source", "model", "--output", str(out), "--questions", str(questions), "--num_samples", "2",
                          "--request_batch", "2", "--no_lawbench_check"])
    generator = CannedGenerator()
    counts = pd.on_policy_pairs(args, pd.read_questions(questions, store), store, generator)
    assert counts == {0: 3, 3: 3} and generator.calls == 2
    pairs = load_preference_data(out)
    assert len(pairs) == 3 and all("《刑法》" in p["chosen"] and "《刑》" in p["rejected"] for p in pairs)
    again = CannedGenerator()
    pd.on_policy_pairs(args, pd.read_questions(questions, store), store, again)
    assert again.calls == 0 and len(load_preference_data(out)) == 3  # resumed: nothing sampled twice


def test_bad_gold_citation_is_an_error(tmp_path, store):
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"instruction": "问", "gold": ["《刑法》第九百条"]}, ensure_ascii=False) + "\n",
                    encoding="utf-8")
    with pytest.raises(pd.DataError, match="q.jsonl:1: gold citation"):
        pd.read_questions(path, store)
