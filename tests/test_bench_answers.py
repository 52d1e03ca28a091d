"""benchmarks/bench_answers.py on crafted answers: each figure counts what its docstring says."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_answers as ba  # noqa: E402

from utils.common.datafiles import DataError  # noqa: E402
from utils.legal.statutes import StatuteStore  # noqa: E402


@pytest.fixture(scope="module")
def store() -> StatuteStore:
    return StatuteStore.load()


@pytest.mark.parametrize("text, why", [
    ("酒驾撞人，可以判刑，但是，酒驾撞人，可以判刑，但是，酒驾", "span"),
    ("好的，，，，，", "span"),
    ("依法处理。依法处理。好的。依法处理。", "sentence"),
    ("应当赔偿。\n应当赔偿。\n另外应当赔偿。\n应当赔偿", "sentence"),
    ("《刑法》第二百六十四条规定：盗窃公私财物，数额较大的，处三年以下有期徒刑、拘役或者管制。", None),
    ("依据《刑法》第一百三十三条之一，醉酒驾驶机动车的，处拘役，并处罚金。", None),
    ("罚罚罚", None),  # three times a single character: under the 4-times rule
    ("依法处理。依法处理。", None),  # 5 characters twice: neither a long span nor three sentences
])
def test_loops(text, why):
    assert ba.loops(text) == why


def _record(i, answer, finish="eos", ids=(), articles=None, instruction=None):
    record = {"index": i, "instruction": instruction or f"问题{i}", "input": "", "reference": None, "answer": answer,
              "finish_reason": finish, "answer_ids": list(ids)}
    if articles is not None:
        record["articles"] = articles
    return record


def test_rate_counts_each_figure(store):
    theft = {"law_name": "中华人民共和国刑法", "number": 264, "suffix": 0, "text": "盗窃公私财物"}
    other = {"law_name": "中华人民共和国刑法", "number": 266, "suffix": 0, "text": "诈骗公私财物"}
    records = [
        _record(0, "依据《刑法》第二百六十四条，入户盗窃的，处三年以下有期徒刑。", "eos", articles=[theft, other],
                instruction="入户偷东西怎么判？"),
        _record(1, "依据《刑法》第九千条处理。", "stop", articles=[other], instruction="借钱不还怎么办？"),
        _record(2, "酒驾撞人，可以判刑，但是，酒驾撞人，可以判刑，但是，", "length", articles=[other]),
        _record(3, "根据《民法典》，应当协商解决。", "eos", articles=[]),  # a law without an article: no citation
    ]
    gold = {"入户偷东西怎么判？": ["《刑法》第二百六十四条"], "借钱不还怎么办？": ["《民法典》第六百七十五条"]}
    r = ba.rate(records, store, gold)
    assert r["n"] == 4
    assert r["ends"] == 0.75
    assert r["loops"] == 0.25
    assert r["cites"] == 0.5
    assert r["citations"] == 2 and r["verified"] == 0.5 and r["citation_statuses"]["not_found"] == 1
    assert r["confirmed"] == 0.5  # 刑法第二百六十四条 fits 「入户偷东西怎么判？」 (BM25's top 5 holds it)
    assert r["gold_n"] == 2 and r["gold_cited"] == 0.5 and r["gold_retrieved"] == 0.5
    assert "new_token_rate" not in r


class _Tokenizer:  # one id per character: ids >= 100 for the characters of NEW
    NEW = "刑法"

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [100 if c in self.NEW else 1 for c in text]}


def test_new_token_rate_against_references(store):
    records = [_record(0, "刑法", ids=[100, 1, 1, 1]), _record(1, "答", ids=[1, 1, 1, 1])]
    records[0]["reference"] = "刑法规定"  # 2 of 4 characters new
    r = ba.rate(records, store, tokenizer=_Tokenizer(), base=100)
    assert r["new_token_rate"] == 1 / 8
    assert r["reference_new_token_rate"] == 0.5 and r["reference_source"] == "references"
    records[0]["answer_ids"] = records[1]["answer_ids"] = []
    with pytest.raises(DataError, match="answer_ids"):
        ba.rate(records, store, tokenizer=_Tokenizer(), base=100)


def test_gold_must_be_real(store):
    with pytest.raises(DataError, match="not an article in force"):
        ba.gold_keys(["《刑法》第九千条"], store)


def test_base_vocab_size_follows_run_info(tmp_path):
    clm, merged, sft = tmp_path / "clm", tmp_path / "merged", tmp_path / "sft"
    for d in (clm, merged, sft):
        d.mkdir()
    (clm / "run_info.json").write_text(json.dumps({"vocab": {"base_rows": 262144, "grew": True}}))
    (merged / "run_info.json").write_text(json.dumps({"adapter_run_info": {"base_model": str(clm)}}))
    assert ba.base_vocab_size(merged) == 262144
    # the demo model: SFT on the grown model records the grown size as its own base_rows (grew False)
    (sft / "run_info.json").write_text(json.dumps({"adapter_run_info": {
        "base_model": str(merged), "vocab": {"base_rows": 263827, "grew": False}}}))
    assert ba.base_vocab_size(sft) == 262144
    (clm / "run_info.json").write_text("{}")
    with pytest.raises(DataError, match="--base_vocab_size"):
        ba.base_vocab_size(merged)


def test_command_line(tmp_path, capsys):
    questions = tmp_path / "q.jsonl"
    assert ba.main(["questions", "--output", str(questions), "--per_split", "2"]) == 0
    items = [json.loads(line) for line in questions.read_text().splitlines()]
    assert len(items) == 2 * len(ba.TEST_SPLITS) and all(i["gold"] and i["instruction"] for i in items)
    answers = tmp_path / "a.jsonl"
    answers.write_text(json.dumps(_record(0, items[0]["gold"][0] + "规定了。", instruction=items[0]["instruction"]),
                                  ensure_ascii=False) + "\n")
    assert ba.main(["rate", str(answers), "--questions", str(questions), "--output_json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "| gold article cited | 100% of 1 |" in out
    assert json.loads((tmp_path / "r.json").read_text())["a"]["verified"] == 1.0
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"answer": "x"}\n')
    assert ba.main(["rate", str(bad)]) == 1
    assert "not an infer.py answer record" in capsys.readouterr().err
