"""LeCoQA's BERTScore (with a local BERT), our judge, and the chart (utils/lecoqa/bertscore.py, judge.py, report.py):
no number in a published column that was not computed as theirs is."""

import json
from pathlib import Path

import pytest

import evaluate
from utils.common.datafiles import DataError
from utils.lecoqa import judge as lecoqa_judge
from utils.lecoqa.bertscore import REFERENCE_CONFIG, bertscore, check_model

EXPECTED = {"1": "您好，根据《民法典》第一千零四十七条，男不得早于二十二周岁。", "2": "可以要求用人单位支付经济补偿。"}


def _lecoqa_dir(tmp_path: Path) -> Path:
    leco = tmp_path / "leco"
    (leco / "evaluation").mkdir(parents=True)
    (leco / "data" / "example").mkdir(parents=True)
    (leco / "evaluation" / "expected.jsonl").write_text(
        "".join(json.dumps({"id": k, "answer": v}, ensure_ascii=False) + "\n" for k, v in EXPECTED.items()),
        encoding="utf-8")
    questions = [{"问题": f"问题{k}？", "答案文本": v, "query_id": int(k), "match_name": ["中华人民共和国民法典第一千零四十七条"]}
                 for k, v in EXPECTED.items()]
    (leco / "data" / "example" / "test.json").write_text(json.dumps(questions, ensure_ascii=False), encoding="utf-8")
    return leco


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    """A randomly initialised 8-layer BERT with a character vocabulary: the shape of the computation, not its
    figures (bert-base-chinese cannot be downloaded here)."""
    from transformers import BertConfig, BertModel, BertTokenizer

    path = tmp_path_factory.mktemp("tiny-bert")
    chars = sorted({c for text in [*EXPECTED.values(), "不知道可以吗"] for c in text})
    (path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars]) + "\n",
                                    encoding="utf-8")
    BertTokenizer(str(path / "vocab.txt"), model_max_length=512).save_pretrained(path)  # as bert-base-chinese
    config = BertConfig(vocab_size=5 + len(chars), hidden_size=16, num_hidden_layers=8, num_attention_heads=2,
                        intermediate_size=32)
    BertModel(config).save_pretrained(path)
    return path


def test_bertscore_is_calc_py_s_computation(tiny_bert):
    import jieba
    from bert_score import score

    generated = {"1": "男不得早于二十二周岁。", "2": "不知道。"}
    result = bertscore(EXPECTED, generated, tiny_bert)
    # calc.py: jieba words joined by spaces, generated first, bert-base-chinese's default layer (8), mean of F1
    _, _, f1 = score([" ".join(jieba.cut(generated[k])) for k in EXPECTED],
                     [" ".join(jieba.cut(EXPECTED[k])) for k in EXPECTED], model_type=str(tiny_bert), num_layers=8)
    assert result["items"] == pytest.approx(dict(zip(EXPECTED, f1.tolist())))
    assert result["BERTScore"] == pytest.approx(sum(f1.tolist()) / 2) and not result["comparable"]
    assert bertscore(EXPECTED, dict(EXPECTED), tiny_bert)["BERTScore"] == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(DataError, match="do not match"):
        bertscore(EXPECTED, {"1": "x"}, tiny_bert)


def test_check_model_knows_bert_base_chinese(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({**REFERENCE_CONFIG, "architectures": ["BertForMaskedLM"]}))
    assert check_model(tmp_path)[1]
    (tmp_path / "config.json").write_text(json.dumps({**REFERENCE_CONFIG, "num_hidden_layers": 6}))
    assert not check_model(tmp_path)[1]
    with pytest.raises(DataError, match="no config.json"):
        check_model(tmp_path / "missing")


def test_evaluate_with_a_bert_that_is_not_bert_base_chinese(tiny_bert, tmp_path, capsys):
    leco = _lecoqa_dir(tmp_path)
    data = evaluate.main(["--benchmark", "lecoqa", "--score_predictions", str(leco / "evaluation" / "expected.jsonl"),
                          "--lecoqa_dir", str(leco), "--output_dir", str(tmp_path / "run"),
                          "--bertscore_model", str(tiny_bert)])
    assert data["BERTScore"] == pytest.approx(1.0, abs=1e-5) and data["bertscore"]["comparable"] is False
    assert "BERTScore not computed" not in data["not_computed"] and "LLM-Eval not computed" in data["not_computed"]
    table = (tmp_path / "run" / "scores.md").read_text(encoding="utf-8")
    assert f"| expected (ours) | | – | {data['METEOR']:.4f} | – | 1.0000 |" in table  # not in the published column
    assert "BERTScore 1.0000 with" in table and "not comparable with the published column" in table
    items = json.loads((tmp_path / "run" / "scores.json").read_text(encoding="utf-8"))["items"]
    assert items["1"]["BERTScore"] == pytest.approx(1.0, abs=1e-5)
    assert (tmp_path / "run" / "scores.png").stat().st_size > 10_000  # the chart: published runs and ours
    assert "BERTScore 1.0000" in capsys.readouterr().out


@pytest.mark.parametrize("reply, correct", [("正确", True), ("不正确", False), ("判断：错误。", False),
                                            ("正确。", True), ("无法判断", None), ("正确还是不正确", None)])
def test_verdicts(reply, correct):
    assert lecoqa_judge.verdict(reply) is correct


class _Judge:
    def __init__(self, replies):
        self.replies, self.prompts = list(replies), []

    def complete(self, prompts, max_new_tokens=8, temperature=0.0):
        self.prompts += prompts
        return [self.replies.pop(0) for _ in prompts]


def test_judge_is_cached_and_never_shown_as_llm_eval(tmp_path):
    from utils.lecoqa.report import score

    leco = _lecoqa_dir(tmp_path)
    from utils.lecoqa.questions import load_questions

    questions = load_questions(str(leco), "test")
    judge = _Judge(["正确", "嗯？"])
    data = score(questions, {"1": "男22岁才能结婚。", "2": "不可以。"}, tmp_path / "run", "mine", judge=(judge, "j@x"))
    assert data["judge"] == {"judge": "j@x", "correct_share": 1.0, "judged": 1, "unclear": 1}
    assert EXPECTED["1"] in judge.prompts[0] and "男22岁才能结婚。" in judge.prompts[0]  # reference and answer
    table = (tmp_path / "run" / "scores.md").read_text(encoding="utf-8")
    assert "| mine (ours) | | – |" in table and "judged correct by j@x with our prompt" in table
    again = score(questions, {"1": "男22岁才能结婚。", "2": "不可以。"}, tmp_path / "run", "mine",
                  judge=(_Judge([]), "j@x"))  # every reply cached: nothing asked
    assert again["judge"] == data["judge"]
    with pytest.raises(DataError, match="another judge"):
        score(questions, {"1": "a", "2": "b"}, tmp_path / "run", "mine", judge=(_Judge(["正确"] * 2), "other@y"))


@pytest.mark.parametrize("extra, message", [
    (["--bertscore_model", "."], "add --benchmark lecoqa"),
    (["--benchmark", "lecoqa", "--judge_api_base", "http://127.0.0.1:1/v1"], "go together"),
    (["--benchmark", "lecoqa", "--bertscore_model", "/nonexistent"], "no config.json"),
])
def test_option_errors(extra, message, capsys, tmp_path):
    with pytest.raises(SystemExit):
        evaluate.parse_args(["--score_predictions", "x", "--output_dir", str(tmp_path), *extra])
    assert message in capsys.readouterr().err


def test_a_bert_base_chinese_figure_goes_in_the_published_column():
    from utils.lecoqa.report import table

    summary = {"METEOR": 0.2, "BLEU": 0.05, "BERTScore": 0.7123, "bertscore": {"model": "m", "comparable": True}}
    assert "| mine (ours) | | – | 0.2000 | 0.7123 | 0.0500 |" in table({"mine": summary})
    other = {**summary, "bertscore": {"model": "m", "comparable": False}}
    assert "| mine (ours) | | – | 0.2000 | – | 0.0500 |" in table({"mine": other})
