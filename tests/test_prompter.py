import json
import os

import pytest

from utils.model.prompter import TEMPLATES_DIR, Prompter, TemplateError, available_templates


def test_templates_found_from_any_directory(tmp_path):
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert Prompter("law_template").response_split == "### 回答:"
    finally:
        os.chdir(cwd)


def test_unknown_template_lists_available():
    with pytest.raises(TemplateError) as e:
        Prompter("no_such_template")
    for name in available_templates():
        assert name in str(e.value)
    assert {"law_template", "alpaca"} <= set(available_templates())


@pytest.mark.parametrize("name", ["law_template", "alpaca"])
def test_input_is_used_when_given(name):
    p = Prompter(name)
    with_input = p.generate_prompt("判断罪名", "张某入户窃取现金三千元")
    without = p.generate_prompt("判断罪名")
    assert "张某入户窃取现金三千元" in with_input
    assert "判断罪名" in with_input and "判断罪名" in without
    assert with_input != without
    assert with_input.endswith(p.response_split + "\n")


def test_label_and_history_render_in_order():
    p = Prompter("law_template")
    text = p.generate_prompt("那超过一年呢？", label="视为已订立无固定期限劳动合同。", history=[("不签合同怎么办？", "二倍工资。")])
    assert text.index("不签合同怎么办？") < text.index("二倍工资。") < text.index("那超过一年呢？")
    assert text.endswith("视为已订立无固定期限劳动合同。")
    assert text.count(p.system) == 1  # the system text is not repeated per turn


def test_segments_flag_responses():
    p = Prompter("law_template")
    segs = p.segments("问", None, "答", history=[("q1", "a1")])
    assert [flag for _, flag in segs] == [False, True, False, True]
    assert "".join(t for t, _ in segs) == p.generate_prompt("问", None, "答", [("q1", "a1")])


@pytest.mark.parametrize(
    "output, expected",
    [
        ("前文### 回答:\n 答案在这里 ", "答案在这里"),
        ("没有分隔符的回答", "没有分隔符的回答"),
        ("### 回答:\n第一轮\n### 问题:\n模型自己续写的下一问", "第一轮"),
        ("", ""),
    ],
)
def test_get_response_is_robust(output, expected):
    assert Prompter("law_template").get_response(output) == expected


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"prompt_input": "{instruction}", "prompt_no_input": "{instruction}", "response_split": "x"}, "input"),
        ({"prompt_input": "{instruction}{input}", "prompt_no_input": "{instruction}{input}", "response_split": "x"},
         "unknown placeholder"),
        ({"prompt_input": "{instruction}{input}", "prompt_no_input": "{instrution}", "response_split": "x"},
         "unknown placeholder"),
        ({"prompt_input": "{instruction}{input}", "prompt_no_input": "{instruction}"}, "response_split"),
        ({"prompt_input": "{instruction}{input", "prompt_no_input": "{instruction}", "response_split": "x"}, "braces"),
        ({"prompt_input": "{instruction}{input}", "prompt_no_input": "{instruction}", "response_split": "x",
          "stop": "### 问题"}, "stop"),
    ],
)
def test_malformed_templates_are_rejected(tmp_path, spec, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(spec), encoding="utf-8")
    with pytest.raises(TemplateError, match=message):
        Prompter(str(path))


def test_shipped_templates_are_valid_json():
    for path in TEMPLATES_DIR.glob("*.json"):
        Prompter(str(path))
