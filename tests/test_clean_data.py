"""clean_data.py: rule checks (each reason), robust judge-score parsing, the judge through the
OpenAI-compatible stub server (request, verdicts, resumable cache) and through the tiny local model."""

from __future__ import annotations

import json

import pytest
from test_self_instruct import StubServer, chat_reply

from tools import clean_data
from tools.clean_data import parse_score, repetition
from utils.legal.statutes import StatuteStore

GOOD = {"instruction": "诉讼时效期间是多久？", "input": "",
        "output": "根据《中华人民共和国民法典》第一百八十八条，向人民法院请求保护民事权利的诉讼时效期间为三年。"}
ITEMS = [
    ("good", GOOD),
    ("empty", {"instruction": "什么是自首？", "input": "", "output": "   "}),
    ("malformed", {"instruction": "什么是自首？", "output": ["不是文本"]}),
    ("too_short", {"instruction": "罪名？", "input": "", "output": "盗"}),
    ("repeated", {"instruction": "请介绍盗窃罪。", "input": "", "output": "1. 盗窃罪名：\n1. 盗窃罪名：\n1. 盗窃罪名：\n1. 盗窃罪名："}),
    ("comma_loop", {"instruction": "请介绍盗窃罪。", "input": "", "output": "盗窃罪是，，，，，，，，，，"}),
    ("not_found", {"instruction": "醉驾怎么处罚？", "input": "", "output": "依据《中华人民共和国刑法》第九百条，处拘役。"}),
    ("repealed", {"instruction": "合同什么时候无效？", "input": "", "output": "根据《合同法》第五十二条，恶意串通损害他人利益的合同无效。"}),
    ("unknown_law", {"instruction": "试用期工资有什么规定？", "input": "",
                     "output": "依据《劳动者工资保障法》第十五条，试用期工资不得低于最低工资标准。"}),
    ("old_case_material", {"instruction": "这份判决书引用的法律现在还有效吗？", "input": "本院依照《合同法》第一百零七条判决如下……",
                           "output": "合同法已于2021年1月1日废止，相关规则现规定在《中华人民共和国民法典》第五百七十七条。"}),
]


def write_items(path, items=ITEMS):
    path.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for _, d in items), encoding="utf-8")
    return path


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize(
    "reply, score",
    [
        ("评分：4\n理由：回答正确。", 4), ("评分: 5/5", 5), ("得分为3分，因为……", 3), ("4", 4), ("４分。", 4),
        ("评分：四\n理由：基本正确", 4), ("Score: 2.", 2), ("5分，引用准确", 5), ("评分：3分\n理由：评分标准第2条", 3),
        ("评分：4.5", None), ("初步评分：2，复核后评分：5", None), ("这条数据很好。", None), ("", None), ("评分：7", None),
        ("，，，，，，", None),
    ],
)
def test_parse_score(reply, score):
    assert parse_score(reply) == score


@pytest.mark.parametrize(
    "text, looping",
    [
        ("盗窃罪名：盗窃罪名：盗窃罪名：", True), ("，，，，，，，，", True), ("好的好的好的好的好的", True),
        ("第一行很长的内容重复\n第一行很长的内容重复\n第一行很长的内容重复", True),
        ("被告人×××、××××××于2020年", False), ("处100000元以上500000元以下罚款", False), ("哈哈哈", False),
        ("（一）重婚或者与他人同居；\n（二）实施家庭暴力或者虐待、遗弃家庭成员；", False),
    ],
)
def test_repetition(text, looping):
    assert (repetition(text) is not None) == looping


def test_repetition_never_fires_on_real_statutes():
    # laws, judicial interpretations and regulations alike (the importer drops LawRefBook's empty 续表 lines)
    assert [a.citation for a in StatuteStore.load().current_articles() if repetition(a.text)] == []


def test_rules_only(tmp_path, capsys):
    src = write_items(tmp_path / "data.jsonl")
    assert clean_data.main(["--input", str(src), "--no_judge"]) == 0
    kept = read_jsonl(tmp_path / "data.kept.jsonl")
    rejected = read_jsonl(tmp_path / "data.rejected.jsonl")
    assert kept == [GOOD, ITEMS[8][1], ITEMS[9][1]]  # unknown laws pass by default; old case material is not checked
    by_name = dict(zip([name for name, _ in ITEMS if name not in ("good", "unknown_law", "old_case_material")], rejected))
    expected = {"empty": "empty: output", "malformed": "malformed: field 'output' is list", "too_short": "too_short: ",
                "repeated": "repeated: output", "comma_loop": "repeated: output: the character '，'",
                "not_found": "citation_not_found: 《中华人民共和国刑法》第九百条",
                "repealed": "citation_repealed: 《合同法》第五十二条"}
    for name, reason in expected.items():
        assert any(r.startswith(reason) for r in by_name[name]["reasons"]), (name, by_name[name]["reasons"])
        assert by_name[name]["where"].endswith(f"data.jsonl:{[n for n, _ in ITEMS].index(name) + 1}")
    out = capsys.readouterr().out
    assert "10 items: 3 kept" in out and "citation_repealed 1" in out
    # stricter: unknown laws rejected too
    assert clean_data.main(["--input", str(src), "--no_judge", "--reject_unknown_laws", "--kept_path", str(tmp_path / "k.jsonl"),
                            "--rejected_path", str(tmp_path / "r.jsonl")]) == 0
    assert read_jsonl(tmp_path / "k.jsonl") == [GOOD, ITEMS[9][1]]


def test_seed_tasks_pass_the_rules(tmp_path):
    seeds = clean_data.ROOT / "resources" / "seed_tasks.jsonl"
    assert clean_data.main(["--input", str(seeds), "--no_judge", "--kept_path", str(tmp_path / "k.jsonl"),
                            "--rejected_path", str(tmp_path / "r.jsonl"), "--reject_unknown_laws"]) == 0
    assert read_jsonl(tmp_path / "r.jsonl") == []


def judge_reply(body: dict, n: int) -> tuple[int, dict]:
    content = body["messages"][-1]["content"]
    if "自首" in content:
        return 200, chat_reply("评分：5\n理由：准确。")
    if "正当防卫" in content:
        return 200, chat_reply("评分：2\n理由：遗漏了特殊防卫。")
    return 200, chat_reply("这条数据整体不错，但我无法给出分数。")


def test_judge_through_openai_stub_and_resume(tmp_path, capsys):
    items = [("good", GOOD),
             ("surrender", {"instruction": "什么是自首？", "input": "", "output": "犯罪以后自动投案，如实供述自己的罪行的，是自首。"}),
             ("defence", {"instruction": "什么是正当防卫？", "input": "", "output": "为制止正在进行的不法侵害而采取的行为。"}),
             ("rule_reject", ITEMS[3][1])]
    src = write_items(tmp_path / "d.jsonl", items)
    with StubServer() as stub:
        stub.respond = judge_reply
        argv = ["--input", str(src), "--backend", "openai", "--api_base", stub.url, "--model", "judge-model",
                "--max_retries", "0", "--judge_batch", "2"]
        assert clean_data.main(argv) == 0
        assert len(stub.requests) == 3  # the rule-rejected item is never sent to the judge
        body = stub.requests[0]["body"]
        assert body["model"] == "judge-model" and body["temperature"] == 0.0 and body["max_tokens"] == 128
        prompt = body["messages"][0]["content"]
        assert prompt.startswith("你是一名严格的法律数据审核员") and "【输入】无" in prompt and "评分：<1到5的整数>" in prompt
        kept, rejected = read_jsonl(tmp_path / "d.kept.jsonl"), read_jsonl(tmp_path / "d.rejected.jsonl")
        assert [k["instruction"] for k in kept] == ["什么是自首？"] and kept[0]["judge_score"] == 5
        reasons = {r["instruction"]: r["reasons"] for r in rejected}
        assert reasons["诉讼时效期间是多久？"][0].startswith("judge_unparseable: no single 1-5 score in '这条数据整体不错")
        assert reasons["什么是正当防卫？"] == ["judge_score: 2 < 4"]
        assert reasons["罪名？"][0].startswith("too_short: instruction")
        # rerun: every verdict comes from the cache, nothing is asked again, same files
        assert clean_data.main(argv) == 0
        assert len(stub.requests) == 3 and read_jsonl(tmp_path / "d.kept.jsonl") == kept
        assert "3 cached, 0 to ask" in capsys.readouterr().out
        # a cache written by another judge is not silently reused
        assert clean_data.main([*argv[:-6], "--model", "other-model", "--max_retries", "0"]) == 1
        assert "made by another judge" in capsys.readouterr().err


def test_judge_http_error_is_one_line(tmp_path, capsys):
    src = write_items(tmp_path / "d.jsonl", ITEMS[:1])
    with StubServer() as stub:
        stub.respond = lambda body, n: (404, {"error": {"message": "The model `nope` does not exist"}})
        assert clean_data.main(["--input", str(src), "--backend", "openai", "--api_base", stub.url, "--model", "nope",
                                "--max_retries", "0"]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("clean_data: error: ") and "HTTP 404" in err and "does not exist" in err
    assert not (tmp_path / "d.kept.jsonl").exists()


def test_judge_with_the_tiny_local_model(tiny_model_dir, tmp_path):
    src = write_items(tmp_path / "d.jsonl", ITEMS[:4])
    assert clean_data.main(["--input", str(src), "--backend", "local", "--model_path", str(tiny_model_dir),
                            "--device", "cpu", "--judge_max_new_tokens", "8", "--judge_batch", "2"]) == 0
    kept, rejected = read_jsonl(tmp_path / "d.kept.jsonl"), read_jsonl(tmp_path / "d.rejected.jsonl")
    assert len(kept) + len(rejected) == 4
    cache = read_jsonl(tmp_path / "d.kept.judge_cache.jsonl")
    assert len(cache) == 1 and cache[0]["judge"].startswith("local:")  # only GOOD passed the rules
    judged = next(r for r in kept + rejected if r["instruction"] == GOOD["instruction"])
    assert judged["judge_score"] == parse_score(cache[0]["reply"])
    # whatever the random model said, nothing without a clear score >= 4 is kept
    assert all(k.get("judge_score") is not None and k["judge_score"] >= 4 for k in kept)
    if judged["judge_score"] is None:
        assert judged in rejected and judged["reasons"][0].startswith("judge_unparseable")
