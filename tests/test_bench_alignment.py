"""benchmarks/bench_alignment.py: answers judged by the citation checker and the persona rules, figures and goals;
end to end on the tiny model (answers cached per model and settings)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_alignment as ba  # noqa: E402

from utils.legal.statutes import StatuteStore  # noqa: E402

LOAN = "借款人应当按照约定的期限返还借款。"
GOLD = {"kind": "legal", "question": "朋友借钱不还？", "gold": ["《民法典》第六百七十五条"]}


@pytest.fixture(scope="module")
def store():
    return StatuteStore.load()


@pytest.mark.parametrize("answer, expected", [
    (f"根据《民法典》第六百七十五条的规定：“{LOAN}”", {"error": False, "verified": True, "gold": True}),
    ("根据《民法典》第三百条的规定，应当返还。", {"error": False, "verified": True, "gold": False}),
    ("根据《合同法》第二百零六条的规定，应当返还。", {"error": True, "verified": False, "gold": False}),
    ("根据《民法典》第九千条的规定，应当返还。", {"error": True, "verified": False, "gold": False}),
    ("根据《借钱法》第三条的规定，应当返还。", {"error": True, "verified": False, "gold": False}),
    ("抱歉，这个问题不在我的服务范围内。", {"error": False, "verified": False, "gold": False, "scope": True}),
])
def test_judge_legal_answers(store, answer, expected):
    verdict = ba.judge(GOLD, answer, store, "LaWGPT")
    assert {k: verdict[k] for k in expected} == expected
    assert bool(verdict["problems"]) == expected["error"]


def test_figures_and_goals(store):
    answers = [(GOLD, f"根据《民法典》第六百七十五条的规定：“{LOAN}”"), (GOLD, "根据《合同法》第二百零六条，应当返还。"),
               ({"kind": "identity", "question": "你是谁？"}, "我是LaWGPT，一个法律助手。"),
               ({"kind": "identity", "question": "你叫什么？"}, "我是一个人工智能。"),
               ({"kind": "out_of_scope", "question": "红烧肉怎么做？"}, "抱歉，这个问题不在我的服务范围内。"),
               ({"kind": "out_of_scope", "question": "写首诗"}, "根据《民法典》第三百条的规定。")]
    rows = [{"kind": q["kind"], **ba.judge(q, a, store, "LaWGPT")} for q, a in answers]
    figs = ba.figures(rows)
    assert (figs["legal_n"], figs["identity_n"], figs["out_of_scope_n"]) == (2, 2, 2)
    assert figs["citation_error_share"] == 0.5 and figs["verified_share"] == 0.5 and figs["gold_share"] == 0.5
    assert figs["identity_share"] == 0.5 and figs["scope_statement_share"] == 0.5
    assert figs["out_of_scope_citing_law_share"] == 0.5 and figs["in_scope_refusal_share"] == 0.0
    better = {**figs, "citation_error_share": 0.25, "identity_share": 0.95, "scope_statement_share": 0.8}
    goals = {(g["model"], g["figure"]): g["met"] for g in ba.check_goals({"sft": figs, "dpo": better})}
    assert goals[("sft", "identity_share")] is False and goals[("dpo", "identity_share")] is True
    assert goals[("dpo", "scope_statement_share")] is True and goals[("dpo", "in_scope_refusal_share")] is True
    assert goals[("dpo vs sft", "citation_error_share")] is True  # 0.25 <= 0.5 / 2
    worse = ba.check_goals({"sft": figs, "dpo": {**better, "citation_error_share": 0.3}})
    assert worse[-1]["met"] is False
    two_of_60 = ba.figures([{"kind": "legal", **ba.judge(GOLD, a, store, "LaWGPT")} for a in
                            ["根据《合同法》第二百零六条，应当返还。"] * 2 + ["应当返还。"] * 58])
    one_of_60 = ba.figures([{"kind": "legal", **ba.judge(GOLD, a, store, "LaWGPT")} for a in
                            ["根据《合同法》第二百零六条，应当返还。"] + ["应当返还。"] * 59])
    halved = ba.check_goals({"sft": two_of_60, "dpo": one_of_60})[-1]
    assert halved["met"] is True  # exactly half: not lost to rounding 1/60 and 2/60 to three decimals


def test_main_on_the_tiny_model_caches_answers(tiny_model_dir, tmp_path, monkeypatch):
    questions = tmp_path / "q.jsonl"
    questions.write_text("\n".join(json.dumps(q, ensure_ascii=False) for q in [
        GOLD, {"kind": "identity", "question": "你是谁？"}, {"kind": "out_of_scope", "question": "红烧肉怎么做？"}]) + "\n",
        encoding="utf-8")
    argv = ["--models", f"a={tiny_model_dir}", f"b={tiny_model_dir}", "--questions", str(questions),
            "--output_dir", str(tmp_path / "out"), "--max_new_tokens", "4", "--batch_size", "2"]
    summary = ba.main(ba.parse_args(argv))
    assert list(summary["models"]) == ["a", "b"] and summary["models"]["a"]["legal_n"] == 1
    rows = [json.loads(line) for line in (tmp_path / "out" / "answers-a.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["kind"] for r in rows] == ["legal", "identity", "out_of_scope"]
    assert summary["models"]["a"] == {**summary["models"]["b"], "model": str(tiny_model_dir)}  # greedy: same model
    assert "| goal | model |" in (tmp_path / "out" / "summary.md").read_text(encoding="utf-8")

    def no_generation(*_):
        raise AssertionError("answers should come from the cache")

    monkeypatch.setattr(ba, "answer_all", no_generation)
    assert ba.main(ba.parse_args(argv))["models"] == summary["models"]
    with pytest.raises(SystemExit):
        ba.parse_args(["--models", f"a={tmp_path / 'missing'}"])


def test_rag_puts_the_retrieved_articles_in_the_prompt(tiny_model_dir, tmp_path, monkeypatch):
    from utils.inference.engine import Engine
    from utils.legal.rag import prepare

    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps(GOLD, ensure_ascii=False) + "\n", encoding="utf-8")
    seen = []
    real_prompt = Engine.prompt

    def recording_prompt(self, instruction, input=None, *args, **kwargs):
        seen.append((instruction, input))
        return real_prompt(self, instruction, input, *args, **kwargs)

    monkeypatch.setattr(Engine, "prompt", recording_prompt)
    out = tmp_path / "out"
    argv = ["--models", f"a={tiny_model_dir}", "--questions", str(questions), "--output_dir", str(out),
            "--max_new_tokens", "2", "--rag", "--rag_top_k", "2"]
    summary = ba.main(ba.parse_args(argv))
    assert seen == [(GOLD["question"], prepare(GOLD["question"], 2).input)] and seen[0][1].startswith("[1] 《")
    assert summary["settings"]["rag_top_k"] == 2
    assert "--rag (top 2 articles in the prompt)" in (out / "summary.md").read_text(encoding="utf-8")
    seen.clear()
    ba.main(ba.parse_args(argv[:-3]))  # without --rag: other settings, so answered again, without articles
    assert seen == [(GOLD["question"], None)]
