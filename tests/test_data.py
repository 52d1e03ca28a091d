import json

import pytest

from utils.common.datafiles import (
    DataError,
    expand_paths,
    files_sha256,
    load_documents,
    load_instruction_data,
    read_records,
)
from utils.model.prompter import Prompter

RESOURCES = __import__("pathlib").Path(__file__).resolve().parent.parent / "resources"


def test_shipped_examples_load():
    tune = load_instruction_data(RESOURCES / "example_instruction_tune.json")
    assert len(tune) >= 5 and all(item["output"] for item in tune)
    assert any(item["history"] for item in tune) and any(item["input"] for item in tune)
    docs = load_documents(RESOURCES / "example_instruction_train.json")
    assert docs and all("第" in d for d in docs)
    questions = load_instruction_data(RESOURCES / "example_infer_data.json", require_output=False)
    assert [q["instruction"] for q in questions][:2] == ["酒驾撞人怎么判刑？", "请介绍赌博罪的定义。"]
    assert len(questions) == 6


def test_json_array_records_know_their_line(tmp_path):
    path = tmp_path / "d.json"
    path.write_text('[\n  {"instruction": "a", "output": "b"},\n\n  {"instruction": "c",\n "output": "d"}\n]\n')
    assert [r.line for r in read_records(path)] == [2, 4]


@pytest.mark.parametrize(
    "suffix, text, where, what",
    [
        (".jsonl", '{"instruction": "a", "output": "b"}\n{"instruction": "c"}\n', 2, "missing field 'output'"),
        (".jsonl", '{"instruction": "a", "output": "b"}\n{"instruction": "a", "output": "b"\n', 2, "invalid JSON"),
        (".jsonl", '{"instruction": 3, "output": "b"}\n', 1, "must be a string"),
        (".jsonl", '{"instruction": "  ", "output": "b"}\n', 1, "is empty"),
        (".jsonl", '["instruction", "output"]\n', 1, "expected a JSON object"),
        (".jsonl", '{"instruction": "a", "output": "b", "history": [["q"]]}\n', 1, "history"),
        (".json", '[\n{"instruction": "a", "output": "b"},\n{"instruction": "a", "input": 5, "output": "b"}\n]', 3,
         "'input' must be a string"),
        (".json", '[\n{"instruction": "a", "output": "b"},\n{"instruction": "a" "output": "b"}\n]', 3, "invalid JSON"),
        (".json", '{"instruction": "a", "output": "b"}', 1, "one array"),
        (".json", '[\n{"instruction": "a", "output": "b"}\n', 3, "unterminated"),
    ],
)
def test_bad_instruction_data_names_file_and_line(tmp_path, suffix, text, where, what):
    path = tmp_path / f"bad{suffix}"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError) as e:
        load_instruction_data(path)
    assert str(e.value).startswith(f"{path}:{where}:")
    assert what in str(e.value)


def test_output_optional_for_inference(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"instruction": "问"}, ensure_ascii=False) + "\n", encoding="utf-8")
    assert load_instruction_data(path, require_output=False)[0]["output"] is None
    with pytest.raises(DataError, match="missing field 'output'"):
        load_instruction_data(path)


@pytest.mark.parametrize("name, text, what", [
    ("missing.jsonl", None, "no such file"),
    ("data.csv", "a,b\n", "unsupported extension"),
    ("empty.txt", "  \n", "empty document"),
    ("latin.jsonl", b"\xff\xfe{", "not UTF-8"),
])
def test_unreadable_files(tmp_path, name, text, what):
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    elif text is not None:
        path.write_text(text)
    with pytest.raises(DataError, match=what):
        load_documents(path) if name.endswith(".txt") else load_instruction_data(path)


def test_documents_from_text_and_jsonl(tmp_path):
    (tmp_path / "law.txt").write_text("第一条 为了……\n第二条 ……", encoding="utf-8")
    (tmp_path / "docs.jsonl").write_text('{"content": "判决书"}\n{"text": "x"}\n', encoding="utf-8")
    assert load_documents(tmp_path / "law.txt") == ["第一条 为了……\n第二条 ……"]
    with pytest.raises(DataError, match=r"docs.jsonl:2: missing field 'content'"):
        load_documents(tmp_path / "docs.jsonl")


def test_expand_paths_and_hash(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "b.jsonl").write_text("x")
    (tmp_path / "d" / "a.json").write_text("y")
    (tmp_path / "d" / "skip.csv").write_text("z")
    files = expand_paths([tmp_path / "d"], (".json", ".jsonl"))
    assert [f.name for f in files] == ["a.json", "b.jsonl"]
    assert files_sha256(files) != files_sha256(files[::-1])
    with pytest.raises(DataError, match="no such file"):
        expand_paths([tmp_path / "nope"], (".json",))


def test_examples_render_with_law_template():
    p = Prompter("law_template")
    for item in load_instruction_data(RESOURCES / "example_instruction_tune.json"):
        text = p.generate_prompt(item["instruction"], item["input"], item["output"], item["history"])
        assert item["output"] in text and (not item["input"] or item["input"] in text)
